"""The moderation and labeling sidecars that run beside GPU model containers."""

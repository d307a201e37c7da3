"""Content moderation rules shared by the Triton models and the sidecar (Art.4, Art.14).

One piece of code per rule: the Triton Python-backend models in `sidecars/triton/models/` import
this package, and the unit tests test it directly, so what is tested is what is served.

- `hegui.moderation.categories`: the 31 risks of GB/T 45654-2025 Appendix A and their articles.
- `hegui.moderation.normalize`: text folded against evasion, mapped back to the original.
- `hegui.moderation.lexicon`: keyword matching in one pass (Aho-Corasick), versioned, reloaded.
- `hegui.moderation.pii`: personal information (resident ID, mobile, bank card, e-mail) spans.
- `hegui.moderation.quality`: recall on generated evasions, false positives on clean text.
"""

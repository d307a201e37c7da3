//go:build tools

// Package tools pins the command that build compiles; it is never built itself. kube-router's
// network policy controller enforces NetworkPolicies on the real node (iptables and ipset,
// over the bridge CNI plugin, which implements none); its router and service proxy stay off.
package tools

import _ "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router"

//go:build tools

// Package tools pins the command that build.sh compiles; it is never built itself.
package tools

import _ "helm.sh/helm/v3/cmd/helm"

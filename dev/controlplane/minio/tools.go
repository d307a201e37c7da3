//go:build tools

// Package tools pins the command that dev/controlplane/build compiles; it is never built itself.
// MinIO is AGPL-3.0: hegui runs it as its own process (or pod) and never links it.
package tools

import _ "github.com/minio/minio"

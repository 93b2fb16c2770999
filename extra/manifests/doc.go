// Package manifests holds no code: its test decodes the Kubernetes
// manifests of the repository's examples strictly into the Kubernetes API
// types (cert-manager's resources into the part of its v1 API they use),
// so that a misspelt or misplaced field fails the build. It is a
// module of its own, so that the library does not depend on the
// Kubernetes API.
package manifests

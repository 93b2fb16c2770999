// Package manifests holds no code: its test decodes the Kubernetes
// manifests of the repository's examples strictly into the Kubernetes API
// types, so that a misspelt or misplaced field fails the build. It is a
// module of its own, so that the library does not depend on the
// Kubernetes API.
package manifests

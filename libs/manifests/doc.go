// Package manifests holds the tests of the Kubernetes manifests in
// deploy/kustomize: they build with kustomize, and their NetworkPolicies
// allow exactly the flows Parley's architecture needs.
package manifests

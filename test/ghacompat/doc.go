// Package ghacompat runs cache-serve's GitHub Actions cache test
// (internal/server/gha/ghatest.RunBuildKit) with the go-actions-cache that
// BuildKit v0.32 vendors, which one module cannot hold beside the newest
// that the main module tests with.
package ghacompat

// Package reliability holds the end-to-end reliability tests of the stores
// (it has no code of its own): every backend against its real server on
// 127.0.0.1, through a fault-injecting proxy (internal/faultproxy), with
// each fault at each phase of a save and a restore; and racing writers.
//
// With CACHE_WRITE_RELIABILITY=1, TestReliability writes the outcome table
// to docs/RELIABILITY.md (when every store ran).
package reliability

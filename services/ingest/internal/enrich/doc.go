// Package enrich derives the metadata ingest adds to a ConversationStarted
// before publishing it: a friendly anonymous display name from the visitor
// token, platform and device class from the user agent, the visitor IP as seen
// at the edge, and a coarse location from a MaxMind-format GeoIP City
// database.
//
// Everything here is deterministic and side-effect free except GeoIP, which
// reads a database file. Values a client set explicitly are never overwritten.
package enrich

// Package caseclient turns the rule engine's anomaly episodes into cases in
// the city's case system, exactly once per sink, and keeps them current.
//
// A Client implements rules.Sink. Each transition it accepts is written to a
// durable bbolt outbox before Transitions returns (that return is the
// acknowledgement to the engine); per-sink delivery loops then send the
// operations (open, update, cleared) in order per case over Open311
// GeoReport v2 (with the mySociety servicerequestupdates extension) or a
// Standard Webhooks signed JSON webhook, with backoff, Retry-After, a
// circuit breaker, flood caps and reconciliation after ambiguous failures.
// The gateway never closes a case; when the case system closes one while its
// anomaly persists, a new case referencing the old one opens after a wait.
//
// Case codes (component/event classes, service codes, deadlines, responsible
// departments) come from a city code table (LoadCodeTable), never from code.
package caseclient

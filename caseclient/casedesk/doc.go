// Package casedesk is citygw's reference case desk: the server side of the
// case-intake protocols the case client speaks, small enough to run in tests
// and in the demo as a real process over real HTTP.
//
// It implements Open311 GeoReport v2 (JSON format: services, service
// definitions, requests, tokens for batch services), the mySociety
// servicerequestupdates extension, and a Standard Webhooks v1 receiver with
// signature checking, webhook-id deduplication and Idempotency-Key semantics.
// Everything received is persisted in a bbolt file and survives a restart.
// A plain HTML page lists the received cases, and a loopback-only control API
// lets tests read what arrived, inject faults (500, 429/503 with Retry-After,
// slow answers, dropped connections) and play the case system's verification
// stage by closing a request.
//
// See README.md in this folder for the choices where the protocols leave room.
package casedesk

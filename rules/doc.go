// Package rules is citygw's rule engine: it loads YAML rules whose conditions
// are expr-lang expressions, compiles them once against a typed environment
// per device kind, evaluates them against readings (and, for time-driven
// rules, on a ticker), and runs a Prometheus-style state machine per rule and
// group key (inactive → pending → firing → resolved) whose transitions become
// anomaly episodes for the case client.
//
// It also holds the author tooling: Check compiles rule files and reports
// errors with file:line:col, and RunTests runs promtool-style unit tests
// (input series in, expected episodes out). See README.md for the rule
// language.
package rules

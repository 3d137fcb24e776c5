// Package rules is citygw's rule engine: it loads YAML rules whose conditions
// are expr-lang expressions, compiles them once against a typed environment
// per device kind, evaluates them against readings (and, for time-driven
// rules, on a ticker), and runs a Prometheus-style state machine per rule and
// group key (inactive → pending → firing → resolved) whose transitions become
// anomaly episodes for the case client.
//
// It also holds the author tooling: Check compiles rule files and reports
// errors with file:line:col, and RunTests runs promtool-style unit tests
// (input series in, expected episodes out). Explain and Backtest replay past
// readings from a Source (rules/history reads InfluxDB and line protocol)
// through a real engine: why a rule did or did not fire for an asset, and
// which episodes a rule set would have opened over a time range. See
// README.md for the rule language.
package rules

// Package grafana holds no Go code: this folder is citygw's Grafana
// provisioning (provisioning/datasources, provisioning/dashboards), the
// dashboards (dashboards/*.json), and the Prometheus scrape configuration and
// alert rules the "Gateway health" dashboard and gateway/RUNBOOK.md rely on.
//
// Its tests (package grafana_test) keep those files honest: every dashboard
// refers only to the provisioned data sources and to defined variables, every
// InfluxQL panel and variable query runs without error and returns rows
// against a real InfluxDB 1.8 filled by firmware-sim through the gateway, and
// every PromQL expression (dashboards and alert rules) names only metrics the
// running gateway exposes.
package grafana

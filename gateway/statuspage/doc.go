// Package statuspage serves the gateway's status page on the admin
// listener: the city at a glance (an SVG map of the assets coloured by
// state, filterable by kind, district and grid, the firing episodes with
// their cases, and the health of every source and sink), one page per
// asset (its inventory record, last reading, a sparkline per numeric field
// from the rule engine's window or display history, and the rules watching
// it), a JSON summary and
// a server-sent event stream that lets the page refresh itself.
//
// Everything is rendered on the server with no external assets (the
// gateway's machines have no internet). The per-asset state is classified
// in one O(assets) pass into a byte per asset at most once per refresh
// interval and shared by every request; a request filters and aggregates
// over those bytes and, when more than MaxPoints assets would be drawn,
// bins them into a grid of cells instead of drawing circles, so the page
// stays fast with a whole city's 126,000 assets.
//
// The page reads the gateway's parts through small interfaces defined here
// (RuleView, SeenSource, ModbusSource, MQTTSource, InfluxSource, WALSource,
// CaseSource); each may be left nil when the gateway runs without it.
package statuspage

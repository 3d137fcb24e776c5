package statuspage

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/citygw/citygw/gateway/testenv"
	"github.com/citygw/citygw/gateway/wal"
)

// pageRefresh is the browser test's refresh interval.
const pageRefresh = 300 * time.Millisecond

// cdp is a minimal Chrome DevTools Protocol client: calls by id, and every
// event kept for the test to inspect.
type cdp struct {
	t    *testing.T
	conn *websocket.Conn
	mu   sync.Mutex
	next int
	wait map[int]chan cdpMsg
	evs  []cdpMsg
	evc  chan struct{} // signalled on every event
	dead chan struct{}
}

type cdpMsg struct {
	ID     int             `json:"id,omitempty"`
	Method string          `json:"method,omitempty"`
	Params json.RawMessage `json:"params,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  *struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	} `json:"error,omitempty"`
}

func dialCDP(t *testing.T, wsURL string) *cdp {
	t.Helper()
	conn, _, err := websocket.DefaultDialer.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("connecting to Chromium's DevTools: %v", err)
	}
	c := &cdp{t: t, conn: conn, wait: map[int]chan cdpMsg{}, evc: make(chan struct{}, 1), dead: make(chan struct{})}
	t.Cleanup(func() { conn.Close() })
	go func() {
		defer close(c.dead)
		for {
			var m cdpMsg
			if err := conn.ReadJSON(&m); err != nil {
				return
			}
			c.mu.Lock()
			if m.ID != 0 {
				if ch := c.wait[m.ID]; ch != nil {
					ch <- m
					delete(c.wait, m.ID)
				}
			} else {
				c.evs = append(c.evs, m)
				select {
				case c.evc <- struct{}{}:
				default:
				}
			}
			c.mu.Unlock()
		}
	}()
	return c
}

// call sends a command and waits for its result.
func (c *cdp) call(method string, params any, result any) {
	c.t.Helper()
	c.mu.Lock()
	c.next++
	id := c.next
	ch := make(chan cdpMsg, 1)
	c.wait[id] = ch
	err := c.conn.WriteJSON(map[string]any{"id": id, "method": method, "params": params})
	c.mu.Unlock()
	if err != nil {
		c.t.Fatalf("%s: %v", method, err)
	}
	select {
	case m := <-ch:
		if m.Error != nil {
			c.t.Fatalf("%s: %d %s", method, m.Error.Code, m.Error.Message)
		}
		if result != nil {
			if err := json.Unmarshal(m.Result, result); err != nil {
				c.t.Fatalf("%s result: %v", method, err)
			}
		}
	case <-c.dead:
		c.t.Fatalf("%s: DevTools connection lost", method)
	case <-time.After(30 * time.Second):
		c.t.Fatalf("%s: no answer in 30s", method)
	}
}

// waitEvent waits for an event of the method after index from.
func (c *cdp) waitEvent(method string, from int, timeout time.Duration) int {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		for i := from; i < len(c.evs); i++ {
			if c.evs[i].Method == method {
				c.mu.Unlock()
				return i
			}
		}
		c.mu.Unlock()
		select {
		case <-c.evc:
		case <-deadline:
			c.t.Fatalf("no %s within %v", method, timeout)
		}
	}
}

func (c *cdp) eventCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.evs)
}

// errors returns the console errors, uncaught exceptions and browser log
// errors (failed loads, CSP violations) seen so far.
func (c *cdp) errors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for _, e := range c.evs {
		switch e.Method {
		case "Runtime.consoleAPICalled":
			var p struct {
				Type string `json:"type"`
				Args []struct {
					Value       any    `json:"value"`
					Description string `json:"description"`
				} `json:"args"`
			}
			json.Unmarshal(e.Params, &p)
			if p.Type == "error" || p.Type == "assert" {
				out = append(out, fmt.Sprintf("console.%s %v", p.Type, p.Args))
			}
		case "Runtime.exceptionThrown":
			out = append(out, "exception: "+string(e.Params))
		case "Log.entryAdded":
			var p struct {
				Entry struct {
					Level  string `json:"level"`
					Text   string `json:"text"`
					URL    string `json:"url"`
					Source string `json:"source"`
				} `json:"entry"`
			}
			json.Unmarshal(e.Params, &p)
			if p.Entry.Level == "error" {
				out = append(out, fmt.Sprintf("log %s: %s %s", p.Entry.Source, p.Entry.Text, p.Entry.URL))
			}
		}
	}
	return out
}

// eval runs a JavaScript expression in the page and returns its value.
func (c *cdp) eval(expr string) any {
	c.t.Helper()
	var r struct {
		Result struct {
			Value any `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	c.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true}, &r)
	if r.ExceptionDetails != nil {
		c.t.Fatalf("evaluating %s: %s", expr, r.ExceptionDetails.Text)
	}
	return r.Result.Value
}

// navigate loads url and waits for its load event.
func (c *cdp) navigate(url string) {
	c.t.Helper()
	from := c.eventCount()
	c.call("Page.navigate", map[string]any{"url": url}, nil)
	c.waitEvent("Page.loadEventFired", from, 30*time.Second)
}

// screenshot writes a PNG of the page to dir/name and returns its path.
func (c *cdp) screenshot(dir, name string) string {
	c.t.Helper()
	var r struct {
		Data string `json:"data"`
	}
	c.call("Page.captureScreenshot", map[string]any{"format": "png", "captureBeyondViewport": false}, &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil {
		c.t.Fatal(err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) || len(png) < 10_000 {
		c.t.Fatalf("screenshot is not a PNG of a page (%d bytes)", len(png))
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, png, 0o644); err != nil {
		c.t.Fatal(err)
	}
	return p
}

// startChromium starts headless Chromium with DevTools on a free port and
// returns the DevTools WebSocket URL of its page.
func startChromium(t *testing.T) string {
	t.Helper()
	bin := testenv.RequireTool(t, "chromium", "apt-get install -y chromium")
	proc := testenv.StartProcess(t, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions", "--mute-audio",
		"--user-data-dir="+t.TempDir(), "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
		"--window-size=1400,1000", "about:blank")
	if err := proc.WaitOutput("DevTools listening on ws://", 60*time.Second); err != nil {
		t.Fatalf("Chromium did not start: %v", err)
	}
	m := regexp.MustCompile(`DevTools listening on ws://(127\.0\.0\.1:\d+)/`).FindStringSubmatch(proc.Output())
	if m == nil {
		t.Fatalf("no DevTools address in Chromium's output")
	}
	var targets []struct {
		Type string `json:"type"`
		WS   string `json:"webSocketDebuggerUrl"`
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get("http://" + m[1] + "/json/list")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
		}
		for _, tg := range targets {
			if tg.Type == "page" && tg.WS != "" {
				return tg.WS
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no page target in Chromium: %v %+v", err, targets)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// artifactDir is $CITYGW_ARTIFACTS when set (kept after the test), else a
// temporary directory.
func artifactDir(t *testing.T) string {
	if d := os.Getenv("CITYGW_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestBrowser loads the page in headless Chromium: the demo city fed by the
// shipped rules through a real rule engine, with GAS-001's outlet pressure
// out of band (firing) and its case opened at the reference case desk. It
// fails on any console error, checks that GAS-001 is drawn as firing, that
// the page refreshes itself when GAS-002 fires, and writes screenshots.
func TestBrowser(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium")
	}
	w, err := wal.Open(wal.Config{Dir: t.TempDir()}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	f := newFixtureWith(t, true, func(o *Options) { o.Refresh = pageRefresh; o.Now = time.Now; o.WAL = w })
	var episode string
	for _, e := range f.eng.Episodes() {
		if e.Rule == "gas_station.outlet_pressure_out_of_band" {
			episode = e.ID
		}
	}
	cs := f.cases.waitCase(t, episode)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.page.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c := dialCDP(t, startChromium(t))
	c.call("Runtime.enable", nil, nil)
	c.call("Log.enable", nil, nil)
	c.call("Page.enable", nil, nil)
	c.navigate(f.srv.URL + "/")

	state := func(id string) string {
		v := c.eval(fmt.Sprintf(`(function(){ var el = document.querySelector('circle[data-id="%s"]');
			return el ? el.getAttribute("data-state") + "|" + el.getAttribute("class") + "|" + getComputedStyle(el).fill : "" })()`, id))
		s, _ := v.(string)
		return s
	}
	// Firing is drawn firing, in the firing red (#d62828).
	if got := state("GAS-001"); got != "firing|a s-firing|rgb(214, 40, 40)" {
		t.Errorf("GAS-001 in the DOM: %q, want firing in red", got)
	}
	if got := state("GAS-002"); !strings.HasPrefix(got, "reporting|") {
		t.Errorf("GAS-002 in the DOM: %q, want reporting", got)
	}
	if got := c.eval(`document.querySelector('tr.ep[data-state="firing"] a[target="_blank"]').textContent`); got != cs.ID {
		t.Errorf("episode list shows case %v, want %s", got, cs.ID)
	}
	dir := artifactDir(t)
	t.Logf("screenshot of the city page: %s", c.screenshot(dir, "statuspage-city.png"))

	// Queue depths are updated in place, without fetching the page again
	// (beyond the page's own periodic refresh, which may fall in between).
	refreshes := c.eval(`document.body.getAttribute("data-refreshes")`)
	waitStart := time.Now()
	for i := 0; i < 2; i++ {
		if err := w.Append(context.Background(), []byte("gas_station,asset=GAS-001 outlet_pressure_kpa=1.2")); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for c.eval(`document.getElementById("wal").textContent`) != "2 points behind" {
		if time.Now().After(deadline) {
			t.Fatalf("WAL backlog never updated: %v", c.eval(`document.getElementById("wal").textContent`))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := c.eval(`document.body.getAttribute("data-refreshes")`); got != refreshes {
		before, _ := strconv.Atoi(fmt.Sprint(refreshes))
		after, _ := strconv.Atoi(fmt.Sprint(got))
		if periodic := int(time.Since(waitStart)/pageRefresh) + 1; after-before > periodic {
			t.Errorf("a queue depth change refetched the page (%v -> %v refreshes, at most %d periodic)", refreshes, got, periodic)
		}
	}

	// The page refreshes itself: GAS-002 fires and turns red without a reload.
	fireGasPressure(t, f.eng, f.inv, "GAS-002", time.Now())
	deadline = time.Now().Add(20 * time.Second)
	for !strings.HasPrefix(state("GAS-002"), "firing|") {
		if time.Now().After(deadline) {
			t.Fatalf("GAS-002 never shown firing; refreshes: %v, status: %v", c.eval(`document.body.getAttribute("data-refreshes")`),
				c.eval(`document.getElementById("conn").textContent`))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got := c.eval(`document.getElementById("conn").textContent`); !strings.HasPrefix(fmt.Sprint(got), "live") {
		t.Errorf("connection status %q", got)
	}

	// A filter, then the asset page by clicking GAS-001.
	c.navigate(f.srv.URL + "/?kind=gas_station")
	if n := c.eval(`document.querySelectorAll("circle.a").length`); n != float64(5) {
		t.Errorf("%v circles with kind=gas_station, want 5", n)
	}
	from := c.eventCount()
	c.eval(`document.querySelector('circle[data-id="GAS-001"]').dispatchEvent(new MouseEvent("click", {bubbles: true})), true`)
	c.waitEvent("Page.loadEventFired", from, 30*time.Second)
	if got := c.eval(`location.pathname + " " + document.getElementById("state").getAttribute("data-state") + " " +
		document.querySelector('tr.rule[data-rule="gas_station.outlet_pressure_out_of_band"]').getAttribute("data-state") + " " +
		document.querySelectorAll("svg.spark polyline").length`); got != "/assets/GAS-001 firing firing 1" {
		t.Errorf("asset page: %q", got)
	}
	time.Sleep(700 * time.Millisecond) // let the asset page refresh itself at least once
	t.Logf("screenshot of the asset page: %s", c.screenshot(dir, "statuspage-asset.png"))

	if errs := c.errors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

// TestBrowserBigCity loads the 126,000-asset city in Chromium: the map is
// binned, the 100 firing gas stations are drawn in red over the cells, and
// nothing errs.
func TestBrowserBigCity(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Chromium and builds a 126,000-asset city")
	}
	p := bigCity(t)
	srv := httptest.NewServer(p.Handler())
	// Registered before Chromium's: cleanups run last first, so Chromium
	// (and its event stream) is gone before the server waits for its
	// requests to end.
	t.Cleanup(srv.Close)
	c := dialCDP(t, startChromium(t))
	c.call("Runtime.enable", nil, nil)
	c.call("Log.enable", nil, nil)
	c.call("Page.enable", nil, nil)
	c.navigate(srv.URL + "/")
	got := c.eval(`[document.querySelectorAll("rect.c").length > 1000,
		document.querySelectorAll('circle.a[data-state="firing"]').length,
		getComputedStyle(document.querySelector("circle.a.s-firing")).fill].join(" ")`)
	if got != "true 100 rgb(214, 40, 40)" {
		t.Errorf("binned city in the DOM: %q, want cells and 100 red firing circles", got)
	}
	t.Logf("screenshot of 126,000 assets: %s", c.screenshot(artifactDir(t), "statuspage-city-126k.png"))
	if errs := c.errors(); len(errs) > 0 {
		t.Errorf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}

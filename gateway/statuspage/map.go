package statuspage

import (
	"html"
	"io"
	"math"
	"net/url"
	"strconv"
)

// Map geometry in SVG user units.
const (
	mapWidth   = 1000.0
	mapMargin  = 12.0
	mapMinH    = 300.0
	mapMaxH    = 1000.0
	binCols    = 100
	binSize    = mapWidth / binCols
	maxBinRows = int(mapMaxH/binSize) + 1
	maxCells   = binCols * maxBinRows
)

// projection is an equirectangular projection fitted to a bounding box:
// x grows with longitude scaled by the cosine of the middle latitude, y
// grows southwards.
type projection struct {
	minLat, maxLat, minLon, maxLon float64
	kx                             float64 // cos(mid latitude)
	scale                          float64 // SVG units per projected degree
	offX, offY                     float64
	height                         float64
	rows                           int
}

// fit returns the projection that fits the positions into the map, with a
// margin; a single point or a line gets a small box around it.
func fit(lats, lons []float64) projection {
	p := projection{minLat: math.Inf(1), maxLat: math.Inf(-1), minLon: math.Inf(1), maxLon: math.Inf(-1)}
	for i := range lats {
		p.minLat, p.maxLat = math.Min(p.minLat, lats[i]), math.Max(p.maxLat, lats[i])
		p.minLon, p.maxLon = math.Min(p.minLon, lons[i]), math.Max(p.maxLon, lons[i])
	}
	if len(lats) == 0 {
		p.minLat, p.maxLat, p.minLon, p.maxLon = 0, 0, 0, 0
	}
	const minSpan = 0.002 // about 200 m
	if d := p.maxLat - p.minLat; d < minSpan {
		p.minLat, p.maxLat = p.minLat-(minSpan-d)/2, p.maxLat+(minSpan-d)/2
	}
	p.kx = math.Cos((p.minLat + p.maxLat) / 2 * math.Pi / 180)
	if d := p.maxLon - p.minLon; d*p.kx < minSpan {
		pad := (minSpan/p.kx - d) / 2
		p.minLon, p.maxLon = p.minLon-pad, p.maxLon+pad
	}
	dx, dy := (p.maxLon-p.minLon)*p.kx, p.maxLat-p.minLat
	inner := mapWidth - 2*mapMargin
	p.height = math.Min(math.Max(inner*dy/dx+2*mapMargin, mapMinH), mapMaxH)
	p.scale = math.Min(inner/dx, (p.height-2*mapMargin)/dy)
	p.offX = (mapWidth - dx*p.scale) / 2
	p.offY = (p.height - dy*p.scale) / 2
	p.rows = int(math.Ceil(p.height / binSize))
	return p
}

func (p *projection) xy(lat, lon float64) (x, y float64) {
	return p.offX + (lon-p.minLon)*p.kx*p.scale, p.offY + (p.maxLat-lat)*p.scale
}

// cell returns the bin of a map position.
func (p *projection) cell(x, y float64) int {
	c := min(max(int(x/binSize), 0), binCols-1)
	r := min(max(int(y/binSize), 0), p.rows-1)
	return r*binCols + c
}

// binCounts is a request's per-cell, per-state counts (pooled).
type binCounts struct {
	n     [maxCells][numStates]uint32
	cells []uint32 // non-empty cells, in first-seen order
}

// out is an append buffer flushed to w in large writes.
type out struct {
	b   []byte
	w   io.Writer
	err error
}

func (o *out) flushIfBig() {
	if len(o.b) >= 32<<10 {
		o.flush()
	}
}

func (o *out) flush() {
	if o.err == nil && len(o.b) > 0 {
		_, o.err = o.w.Write(o.b)
	}
	o.b = o.b[:0]
}

func (o *out) s(s string)  { o.b = append(o.b, s...) }
func (o *out) f(x float32) { o.b = strconv.AppendFloat(o.b, float64(x), 'f', 1, 32) }
func (o *out) i(n int)     { o.b = strconv.AppendInt(o.b, int64(n), 10) }
func (o *out) attr(name, value string) {
	o.b = append(append(append(append(o.b, ' '), name...), `="`...), value...)
	o.b = append(o.b, '"')
}

// mapInfo says how the map was drawn.
type mapInfo struct {
	Binned  bool
	Drawn   int // circles drawn
	Cells   int // cells drawn (binned)
	Matched int
	Height  int
}

// assetRefs are each asset's id escaped for HTML text and for an href,
// computed once so that drawing allocates nothing per asset. Most ids need
// no escaping: their text is the id itself (html.EscapeString returns it)
// and their href is "assets/" and the text, so only the others keep an
// href of their own (a city of 126,000 would otherwise keep 126,000).
type assetRefs struct {
	text []string         // html-escaped id
	href map[int32]string // html-escaped "assets/<path-escaped id>" where that is not "assets/" + text
}

func newAssetRefs(ids []string) assetRefs {
	r := assetRefs{text: make([]string, len(ids))}
	for i, id := range ids {
		r.text[i] = html.EscapeString(id)
		if h := html.EscapeString(url.PathEscape(id)); h != r.text[i] {
			if r.href == nil {
				r.href = map[int32]string{}
			}
			r.href[int32(i)] = h
		}
	}
	return r
}

// writeHref writes asset i's href.
func (r *assetRefs) writeHref(o *out, i int) {
	o.s("assets/")
	if h, ok := r.href[int32(i)]; ok {
		o.s(h)
		return
	}
	o.s(r.text[i])
}

// writeMap draws the filtered assets of snapshot s as SVG into o.
func (p *Page) writeMap(o *out, s *snapshot, f *filter, matched int) mapInfo {
	ix := p.idx
	info := mapInfo{Matched: matched, Height: int(math.Ceil(ix.proj.height))}
	o.s(`<svg id="map" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 `)
	o.i(int(mapWidth))
	o.s(" ")
	o.i(info.Height)
	o.s(`" role="img" aria-label="map of the assets">`)
	o.s(`<rect class="sea" x="0" y="0" width="100%" height="100%"/>`)
	if matched > p.opts.MaxPoints {
		info.Binned = true
		info.Cells = p.writeBins(o, s, f)
		// The urgent few stay visible as markers over the cells.
		info.Drawn = p.writePoints(o, s, f, Shadow, p.opts.MaxPoints)
	} else {
		info.Drawn = p.writePoints(o, s, f, Waiting, matched)
	}
	o.s(`</svg>`)
	o.flush()
	return info
}

// writePoints draws a circle per filtered asset whose state is at least
// from, less urgent first so the urgent ones lie on top, at most limit.
func (p *Page) writePoints(o *out, s *snapshot, f *filter, from State, limit int) int {
	ix := p.idx
	r := "3"
	switch {
	case limit <= 300:
		r = "5"
	case limit <= 1000:
		r = "4"
	}
	drawn := 0
	for st := from; st < numStates; st++ {
		cls := stateClass[st]
		for i, a := range s.state {
			if a != st || !ix.match(f, i) {
				continue
			}
			if drawn >= limit {
				return drawn
			}
			drawn++
			o.s(`<a href="`)
			p.refs.writeHref(o, i)
			o.s(`"><circle class="a `)
			o.s(cls)
			o.s(`" data-id="`)
			o.s(p.refs.text[i])
			o.s(`" data-state="`)
			o.s(stateNames[st])
			o.s(`" cx="`)
			o.f(ix.x[i])
			o.s(`" cy="`)
			o.f(ix.y[i])
			o.s(`" r="`)
			o.s(r)
			o.s(`"><title>`)
			o.s(p.refs.text[i])
			o.s(` · `)
			o.s(stateNames[st])
			o.s(`</title></circle></a>`)
			o.flushIfBig()
		}
	}
	return drawn
}

var stateClass = [numStates]string{"s-waiting", "s-reporting", "s-silent", "s-shadow", "s-pending", "s-firing"}

// writeBins draws the heat-map: a square per non-empty cell in the colour
// of its most urgent asset, more opaque the more assets it holds.
func (p *Page) writeBins(o *out, s *snapshot, f *filter) int {
	ix := p.idx
	b := p.bins.Get().(*binCounts)
	defer p.bins.Put(b)
	b.cells = b.cells[:0]
	for i, st := range s.state {
		if !ix.match(f, i) {
			continue
		}
		c := ix.cellOf[i]
		cnt := &b.n[c]
		if *cnt == ([numStates]uint32{}) {
			b.cells = append(b.cells, c)
		}
		cnt[st]++
	}
	maxN := uint32(1)
	for _, c := range b.cells {
		var n uint32
		for _, k := range b.n[c] {
			n += k
		}
		maxN = max(maxN, n)
	}
	lmax := math.Log1p(float64(maxN))
	for _, c := range b.cells {
		cnt := &b.n[c]
		var n uint32
		worst := Waiting
		for st, k := range cnt {
			n += k
			if k > 0 {
				worst = State(st)
			}
		}
		op := 0.35 + 0.65*math.Log1p(float64(n))/lmax
		o.s(`<rect class="c `)
		o.s(stateClass[worst])
		o.s(`" x="`)
		o.f(float32(int(c)%binCols) * binSize)
		o.s(`" y="`)
		o.f(float32(int(c)/binCols) * binSize)
		o.s(`" width="`)
		o.f(binSize)
		o.s(`" height="`)
		o.f(binSize)
		o.s(`" fill-opacity="`)
		o.b = strconv.AppendFloat(o.b, op, 'f', 2, 64)
		o.s(`"><title>`)
		o.i(int(n))
		o.s(` assets`)
		for st := numStates - 1; st >= Waiting; st-- {
			if cnt[st] > 0 {
				o.s(`, `)
				o.i(int(cnt[st]))
				o.s(` `)
				o.s(stateNames[st])
			}
			if st == Waiting {
				break
			}
		}
		o.s(`</title></rect>`)
		*cnt = [numStates]uint32{}
		o.flushIfBig()
	}
	return len(b.cells)
}

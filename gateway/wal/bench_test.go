package wal

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/citygw/citygw/gateway/testenv"
)

// BenchmarkAppend measures Append throughput with 1, 2 and 8 concurrent
// appenders per sync mode; appends/s is the figure to read.
func BenchmarkAppend(b *testing.B) {
	l := []byte("streetlight,asset=lamp-0001,circuit=CAB-01/C1,district=110101,gateway=gw-1,grid=11010100101 relay_on=true,tilt_alarm=false,dim_level=80i,firmware=\"2.1.07\",voltage_v=230.10000000000002,current_a=0.652,power_w=148.3,energy_kwh=1234.56,lamp_hours=17532i,ambient_lux=3i,tilt_deg=-1.2000000000000002,fault=\"ok\",temperature_c=31.5,power_factor=0.9599999785423279,device_time=1764130000i 1764130000000000000\n")
	for _, mode := range []SyncMode{SyncNone, SyncInterval, SyncAlways} {
		for _, appenders := range []int{1, 2, 8} {
			b.Run(fmt.Sprintf("sync=%s/appenders=%d", mode, appenders), func(b *testing.B) {
				w, err := Open(Config{Dir: b.TempDir(), Sync: mode, MaxBytes: 64 << 30, SegmentBytes: 64 << 20}, nil, nil)
				if err != nil {
					b.Fatal(err)
				}
				defer w.Close()
				ctx := context.Background()
				b.ReportAllocs()
				b.SetBytes(int64(len(l)))
				start := time.Now()
				var wg sync.WaitGroup
				per := b.N / appenders
				for g := range appenders {
					n := per
					if g == 0 {
						n += b.N % appenders
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						for range n {
							if err := w.Append(ctx, l); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkDrain measures how fast a backlog drains from the log into a real
// InfluxDB 1.8.10 through the InfluxDB writer: points/s.
func BenchmarkDrain(b *testing.B) {
	for _, inFlight := range []int{1, 2, 4} {
		b.Run(fmt.Sprintf("in_flight=%d", inFlight), func(b *testing.B) {
			db := testenv.StartInfluxDB(b)
			w, err := Open(Config{Dir: b.TempDir(), MaxBytes: 64 << 30, SegmentBytes: 64 << 20}, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			defer w.Close()
			points := 100000 * b.N
			ctx := context.Background()
			for i := range points {
				if err := w.Append(ctx, fmt.Appendf(nil, "drain,asset=lamp-%04d,district=110101 voltage_v=230.1,current_a=0.652,power_w=148.3,relay_on=true,lamp_hours=%di %d",
					i%2000, i, int64(i+1)*int64(time.Millisecond))); err != nil {
					b.Fatal(err)
				}
			}
			b.ResetTimer()
			start := time.Now()
			wr, stop := drainWith(b, db, w, inFlight)
			for w.Stats().Backlog > 0 {
				time.Sleep(10 * time.Millisecond)
			}
			elapsed := time.Since(start)
			b.StopTimer()
			stop()
			if st := wr.Stats(); st.Written != int64(points) {
				b.Fatalf("writer: %+v, want %d written", st, points)
			}
			b.ReportMetric(float64(points)/elapsed.Seconds(), "points/s")
		})
	}
}

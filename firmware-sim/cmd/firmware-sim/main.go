// Command firmware-sim plays a small simulated city for citygw: streetlight
// cabinets and lamps and gas pressure-regulating stations served as real
// Modbus TCP devices, waste bins publishing over MQTT, with realistic daily
// dynamics, injectable faults and a ground-truth control API.
//
//	firmware-sim inventory -city configs/city-demo.yaml -o configs/inventory-demo.yaml
//	firmware-sim run -city configs/city-demo.yaml -inventory-out /tmp/inventory.yaml -control 127.0.0.1:8090
//
// See firmware-sim/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/citygw/citygw/devices"
	"github.com/citygw/citygw/devices/yamlconf"
	"github.com/citygw/citygw/firmware-sim/city"
	"github.com/citygw/citygw/firmware-sim/control"
	"github.com/citygw/citygw/firmware-sim/faults"
	"github.com/citygw/citygw/firmware-sim/modbussrv"
	"github.com/citygw/citygw/firmware-sim/mqttpub"
	"github.com/citygw/citygw/firmware-sim/sim"
)

const usage = `usage:
  firmware-sim inventory -city FILE -o FILE [overrides]
  firmware-sim run -city FILE [-inventory-out FILE] [-control 127.0.0.1:PORT] [options and overrides]
  firmware-sim load -city FILE -assets N -messages M [-mqtt URL]   (benchmark load; -count counts)

  firmware-sim version

Run "firmware-sim inventory -h", "firmware-sim run -h" or "firmware-sim load -h" for the flags.
Exit codes: 0 success (run: a clean shutdown on SIGINT/SIGTERM), 1 failure
(bad city config, a port in use, …), 2 bad command line.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "inventory":
		err = inventoryCmd(os.Args[2:], os.Stdout)
	case "run":
		err = runCmd(os.Args[2:], os.Stdout, os.Stderr)
	case "load":
		err = loadCmd(os.Args[2:], os.Stdout, os.Stderr)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(os.Stdout, usage)
		return
	case "version", "-version", "--version":
		v := "(devel)"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
			v = bi.Main.Version
		}
		fmt.Printf("firmware-sim %s (%s, %s/%s)\n", v, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return
	default:
		fmt.Fprintf(os.Stderr, "firmware-sim: unknown command %q\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintf(os.Stderr, "firmware-sim: %v\n", err)
		}
		os.Exit(1)
	}
}

// cityFlags are the flags both commands take: the config and its overrides.
type cityFlags struct {
	file                      string
	seed                      int64
	cabinets, lamps, gas, bin int
	modbusHost                string
	basePort                  int
	mqtt, topic               string
	start                     string
}

func (cf *cityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&cf.file, "city", "", "city config file (YAML, see configs/city-demo.yaml); required")
	fs.Int64Var(&cf.seed, "seed", -1, "random seed (overrides the config's)")
	fs.IntVar(&cf.cabinets, "cabinets", -1, "number of streetlight cabinets (overrides streetlights.cabinets)")
	fs.IntVar(&cf.lamps, "lamps", -1, "lamps per cabinet (overrides streetlights.lamps_per_cabinet)")
	fs.IntVar(&cf.gas, "gas", -1, "number of gas stations (overrides gas.stations)")
	fs.IntVar(&cf.bin, "bins", -1, "number of waste bins (overrides bins.count)")
	fs.StringVar(&cf.modbusHost, "modbus-host", "", "Modbus listen host (overrides modbus.host)")
	fs.IntVar(&cf.basePort, "modbus-base-port", -1, "first Modbus TCP port, the others follow; 0 lets the system pick free ports (overrides modbus.base_port)")
	fs.StringVar(&cf.mqtt, "mqtt", "", "MQTT broker URL such as tcp://127.0.0.1:1883 (overrides mqtt.broker)")
	fs.StringVar(&cf.topic, "topic", "", "bin topic pattern with {asset} (overrides mqtt.topic)")
	fs.StringVar(&cf.start, "start", "", `simulated start time, RFC 3339 or "now" (overrides start)`)
}

// load reads the config, applies overrides and generates the city. autoPorts
// reports that -modbus-base-port 0 asked for system-chosen ports.
func (cf *cityFlags) load() (c *city.City, autoPorts bool, err error) {
	if cf.file == "" {
		return nil, false, errors.New("-city FILE is required")
	}
	conf, err := city.LoadConfig(cf.file)
	if err != nil {
		return nil, false, err
	}
	if cf.seed >= 0 {
		conf.Seed = uint64(cf.seed)
	}
	set := func(v int, dst **int) {
		if v >= 0 {
			*dst = &v
		}
	}
	set(cf.cabinets, &conf.Streetlights.Cabinets)
	set(cf.lamps, &conf.Streetlights.LampsPerCabinet)
	set(cf.gas, &conf.Gas.Stations)
	set(cf.bin, &conf.Bins.Count)
	if cf.modbusHost != "" {
		conf.Modbus.Host = cf.modbusHost
	}
	if cf.basePort == 0 {
		autoPorts = true
	} else if cf.basePort > 0 {
		conf.Modbus.BasePort = cf.basePort
	}
	if cf.mqtt != "" {
		conf.MQTT.Broker = cf.mqtt
	}
	if cf.topic != "" {
		conf.MQTT.Topic = cf.topic
	}
	if cf.start != "" {
		conf.Start = cf.start
	}
	cat, err := devices.LoadBuiltinCatalog()
	if err != nil {
		return nil, false, fmt.Errorf("loading device profiles: %w", err)
	}
	c, err = city.Generate(conf, cat)
	if err != nil {
		return nil, false, fmt.Errorf("%s: %w", cf.file, err)
	}
	return c, autoPorts, nil
}

func inventoryCmd(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("firmware-sim inventory", flag.ContinueOnError)
	var cf cityFlags
	cf.register(fs)
	out := fs.String("o", "", "write the inventory to this file (default: standard output)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, auto, err := cf.load()
	if err != nil {
		return err
	}
	if auto {
		return errors.New("-modbus-base-port 0 only makes sense for run: the ports are chosen when the servers start")
	}
	if *out == "" {
		data, err := c.InventoryYAML()
		if err != nil {
			return err
		}
		_, err = stdout.Write(data)
		return err
	}
	return c.WriteInventory(*out)
}

func runCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("firmware-sim run", flag.ContinueOnError)
	var cf cityFlags
	cf.register(fs)
	invOut := fs.String("inventory-out", "", "write the asset inventory (with the actual ports) to this file before serving")
	ctlAddr := fs.String("control", "127.0.0.1:0", "control API listen address (loopback only; port 0 picks one)")
	speed := fs.Float64("speed", 0, "time acceleration: simulated seconds per wall second (overrides speed)")
	interval := fs.Duration("mqtt-interval", 0, "publish interval per bin (overrides mqtt.interval)")
	history := fs.String("history", "", "ground-truth history kept per asset, e.g. 10m (overrides truth_history)")
	scenario := fs.String("scenario", "", "scenario timeline file: YAML list of {at, fault, asset, for, params}")
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(*level)); err != nil {
		return fmt.Errorf("-log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: lv}))
	if err := control.CheckLoopback(*ctlAddr); err != nil {
		return err
	}
	c, auto, err := cf.load()
	if err != nil {
		return err
	}
	conf := c.Config
	if *speed > 0 {
		conf.Speed = *speed
	}
	if *interval > 0 {
		conf.MQTT.Interval = yamlconf.Duration(*interval)
	}
	if *history != "" {
		d, err := time.ParseDuration(*history)
		if err != nil || d < 0 {
			return fmt.Errorf("-history: want a duration such as 10m, got %q", *history)
		}
		conf.History = yamlconf.Duration(d)
	}
	if auto {
		addrs, err := freePorts(conf.Modbus.Host, len(c.Ports))
		if err != nil {
			return err
		}
		if err := c.SetPortAddrs(addrs); err != nil {
			return err
		}
	}
	if *invOut != "" {
		if err := c.WriteInventory(*invOut); err != nil {
			return err
		}
	}

	wallStart := time.Now()
	simStart := wallStart
	if conf.Start != "" && conf.Start != "now" {
		simStart, _ = time.Parse(time.RFC3339, conf.Start) // checked by the config
	}
	eng := sim.New(c, sim.Options{Speed: conf.Speed, SimStart: simStart, WallStart: wallStart,
		History: conf.History.D(), MessageInterval: conf.MQTT.Interval.D(), Log: log})
	var steps []faults.Step
	if *scenario != "" {
		if steps, err = faults.LoadTimeline(*scenario, eng.Faults()); err != nil {
			return err
		}
	}
	eng.Start()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	units := eng.Units()
	var servers []*modbussrv.Server
	defer func() {
		for _, s := range servers {
			s.Stop()
		}
	}()
	for _, addr := range c.Ports {
		s, err := modbussrv.New(addr, units[addr], modbussrv.Options{ConverterTimeout: conf.Modbus.ConverterTimeout.D(), Log: log})
		if err != nil {
			return err
		}
		if err := s.Start(); err != nil {
			return err
		}
		servers = append(servers, s)
	}

	ln, err := net.Listen("tcp", *ctlAddr)
	if err != nil {
		return fmt.Errorf("control API: %w", err)
	}
	srv := &http.Server{Handler: control.Handler(eng, log), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()

	pub := mqttpub.New(eng, mqttpub.Options{Broker: conf.MQTT.Broker, ClientID: conf.MQTT.ClientID,
		Username: conf.MQTT.Username, Password: conf.MQTT.Password, QoS: byte(*conf.MQTT.QoS),
		Interval: conf.MQTT.Interval.D(), Log: log})
	eng.SetPublisher(pub)
	mqttState := "no mqtt assets"
	pubDone := make(chan struct{})
	if eng.Len() > 0 {
		mqttState = "mqtt connected to " + conf.MQTT.Broker
		if err := pub.Connect(5 * time.Second); err != nil {
			log.Warn("mqtt not connected yet; publishing once it is", "err", err)
			mqttState = "mqtt connecting to " + conf.MQTT.Broker
		}
		go func() {
			pub.Run(ctx)
			close(pubDone)
		}()
	} else {
		close(pubDone)
	}
	go eng.Run(ctx)
	go faults.Play(ctx, steps, eng.Faults(), wallStart, log)

	ports := make([]string, len(c.Ports))
	for i, p := range c.Ports {
		_, ports[i], _ = net.SplitHostPort(p)
	}
	fmt.Fprintf(stdout, "firmware-sim ready: %d modbus devices on %d ports (%s), %d mqtt assets (%s), control http://%s, speed %v, sim time %s\n",
		len(c.Cabinets)+len(c.Lamps)+len(c.Gas), len(c.Ports), portRange(ports), eng.Len(), mqttState,
		ln.Addr(), conf.Speed, eng.SimAt(time.Now()).In(c.Loc).Format(time.RFC3339))
	if f, ok := stdout.(*os.File); ok {
		f.Sync()
	}
	<-ctx.Done()
	log.Info("shutting down")
	<-pubDone
	return nil
}

func portRange(ports []string) string {
	if len(ports) == 0 {
		return "none"
	}
	if len(ports) <= 4 {
		return strings.Join(ports, ",")
	}
	return ports[0] + "…" + ports[len(ports)-1]
}

// freePorts asks the system for n free TCP ports on host.
func freePorts(host string, n int) ([]string, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err != nil {
			return nil, fmt.Errorf("finding a free port: %w", err)
		}
		ls = append(ls, l)
		out = append(out, net.JoinHostPort(host, strconv.Itoa(l.Addr().(*net.TCPAddr).Port)))
	}
	return out, nil
}

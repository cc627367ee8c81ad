package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/fleet"
	"github.com/abboot/abboot/pkg/runstate"
	"github.com/abboot/abboot/pkg/window"
)

// agentCmd runs the fleet agent for the running system until it reboots
// the node or is stopped; a systemd unit starts it again after the boot
// (see docs/fleet.md). The coordination is package fleet; this is the
// machine side: abctl install, reboot and mark-good, and shell hooks.
func agentCmd(g *globals, args []string) error {
	a, err := parseAgent(g, args)
	if err != nil {
		return err
	}
	if a.metrics != "" {
		reg := prometheus.NewRegistry()
		if a.cfg.Metrics, err = fleet.NewMetrics(reg); err != nil {
			return err
		}
		l, err := net.Listen("tcp", a.metrics)
		if err != nil {
			return fmt.Errorf("serving metrics: %w", err)
		}
		defer l.Close()
		go http.Serve(l, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	}
	cli, err := a.etcd.client()
	if err != nil {
		return err
	}
	defer cli.Close()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return fleet.NewAgent(cli, a.node, a.cfg).Run(ctx)
}

// agent is abctl agent's command line, parsed and checked.
type agent struct {
	etcd    *etcdConfig
	cfg     fleet.Config
	node    *node
	metrics string // the address to serve metrics on, "" for none
}

// parseAgent parses abctl agent's arguments and checks the configuration
// they make, so that a bad value fails before anything connects.
func parseAgent(g *globals, args []string) (*agent, error) {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	c := etcdFlags(fs)
	host, _ := os.Hostname()
	name := fs.String("name", host, "the node's name in the fleet")
	spec := fs.String("window", "*", "maintenance window in the local time zone, e.g. \"Sat,Sun 02:00-05:00\"")
	maxRebooting := fs.Int("max-rebooting", 1, "nodes that may reboot at once")
	maxFailures := fs.Int("max-failures", 1, "rollbacks that halt a rollout")
	canaries := fs.Int("canaries", 0, "nodes that start a rollout alone; a failed canary halts it")
	soak := fs.Duration("soak", 10*time.Minute, "how long the canaries must stay healthy before the rest start")
	ttl := fs.Duration("lease-ttl", 10*time.Minute, "how long a place outlives its holder; must cover a reboot")
	fleetlock := fs.String("fleetlock", "", "base URL of a FleetLock server (airlock, a Kubernetes FleetLock server) to take the reboot place from, instead of etcd")
	group := fs.String("group", "default", "the node's reboot group on the FleetLock server")
	channel := fs.String("channel", "", "URL of a signed channel file to take the desired version from, instead of etcd")
	keys := fs.String("keys", "/etc/abboot/keys.pub", "public keys to trust for bundles and the channel file")
	how := fs.String("reboot", "any", "kexec, firmware, or any (kexec, falling back to the firmware)")
	pre := fs.String("pre-reboot", "", "shell command to run before the reboot (drain)")
	post := fs.String("post-commit", "", "shell command to run after the report that follows the reboot (uncordon)")
	metrics := fs.String("metrics", "", "address to serve Prometheus metrics on, e.g. :9477 (default: none)")
	health := fs.String("health", "", "shell command that must succeed before the new version is committed")
	args, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(args) > 0 || *how != "kexec" && *how != "firmware" && *how != "any" {
		return nil, errors.New("usage: abctl agent --etcd URLS --prefix P --window SPEC --max-rebooting N --max-failures N [--canaries N --soak D] [--fleetlock URL [--group G]] [--metrics ADDR] [--channel URL] [--reboot kexec|firmware|any] [--pre-reboot CMD] [--post-commit CMD] [--health CMD]")
	}
	w, err := window.Parse(*spec, time.Local)
	if err != nil {
		return nil, err
	}
	cfg := fleet.Config{Prefix: c.prefix, MaxRebooting: *maxRebooting, MaxFailures: *maxFailures, Canaries: *canaries, Soak: *soak, Window: w, LeaseTTL: *ttl}
	if *fleetlock != "" {
		cfg.FleetLock = &fleet.FleetLock{URL: *fleetlock, ID: *name, Group: *group}
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if *metrics != "" {
		if _, _, err := net.SplitHostPort(*metrics); err != nil {
			return nil, fmt.Errorf("--metrics %q: want HOST:PORT or :PORT: %w", *metrics, err)
		}
	}
	if *channel != "" {
		k, err := bundle.LoadKeys(*keys)
		if err != nil {
			return nil, err
		}
		cfg.Channel = &fleet.Channel{URL: *channel, Keys: k}
	}
	n := &node{g: g, name: *name, how: *how, keys: *keys, pre: *pre, post: *post, health: *health}
	return &agent{etcd: c, cfg: cfg, node: n, metrics: *metrics}, nil
}

// node is the running system as the fleet agent sees it.
type node struct {
	g                 *globals
	name, how, keys   string
	pre, post, health string
}

func (n *node) Name() string { return n.name }

func (n *node) Version() string {
	rs, err := runstate.Read()
	if err != nil {
		return ""
	}
	return rs.Version
}

func (n *node) BootID() string {
	b, _ := os.ReadFile("/proc/sys/kernel/random/boot_id")
	return strings.TrimSpace(string(b))
}

func (n *node) Stage(ctx context.Context, d fleet.Desired) error {
	return installCmd(n.g, []string{"--reboot=none", "--keys", n.keys, d.URL})
}

func (n *node) PreReboot(ctx context.Context) error  { return hook(ctx, "pre-reboot", n.pre) }
func (n *node) PostCommit(ctx context.Context) error { return hook(ctx, "post-commit", n.post) }

func (n *node) Reboot(ctx context.Context) error {
	s, err := n.g.open()
	if err != nil {
		return err
	}
	return s.reboot(n.how, "")
}

// Healthy runs the health command, if any, and commits the running slot
// when it passes.
func (n *node) Healthy(ctx context.Context) (bool, error) {
	if err := hook(ctx, "health", n.health); err != nil {
		return false, nil
	}
	if err := markGoodCmd(n.g, nil); err != nil {
		return false, fmt.Errorf("committing: %w", err)
	}
	return true, nil
}

// hook runs a shell command, if set.
func hook(ctx context.Context, name, cmd string) error {
	if cmd == "" {
		return nil
	}
	c := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	c.Stdout, c.Stderr = os.Stderr, os.Stderr
	if err := c.Run(); err != nil {
		return fmt.Errorf("%s hook %q: %w", name, cmd, err)
	}
	return nil
}

// etcdConfig is where the fleet lives, as the agent and fleet commands take it.
type etcdConfig struct {
	endpoints, prefix string
}

func etcdFlags(fs *flag.FlagSet) *etcdConfig {
	c := &etcdConfig{}
	fs.StringVar(&c.endpoints, "etcd", "http://127.0.0.1:2379", "comma-separated etcd client URLs")
	fs.StringVar(&c.prefix, "prefix", "/abboot/fleet", "etcd prefix of the fleet")
	return c
}

func (c *etcdConfig) client() (*clientv3.Client, error) {
	cli, err := clientv3.New(clientv3.Config{Endpoints: strings.Split(c.endpoints, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("connecting to etcd at %s: %w", c.endpoints, err)
	}
	return cli, nil
}

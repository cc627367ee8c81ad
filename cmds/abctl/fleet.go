package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/fleet"
)

// fleetCmd is the operator's side of a fleet:
//
//	abctl fleet status [--json]          progress, versions, states, places, rollouts
//	abctl fleet set-version VERSION URL  roll VERSION out
//	abctl fleet sign-channel --key K VERSION URL   print a signed channel file
//	abctl fleet gc [--keep N]            delete old rollouts' keys
func fleetCmd(g *globals, args []string) error {
	const usage = "usage: abctl fleet status|set-version|sign-channel|gc [--etcd URLS] [--prefix P] [args]"
	if len(args) == 0 {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("fleet "+args[0], flag.ContinueOnError)
	c := etcdFlags(fs)
	key := fs.String("key", "", "private key to sign the channel file with (sign-channel)")
	keep := fs.Int("keep", 1, "newest rollouts to keep besides the desired one and those in use (gc)")
	pos, err := parseArgs(fs, args[1:])
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	switch {
	case args[0] == "sign-channel" && len(pos) == 2 && *key != "":
		priv, err := bundle.LoadPrivateKey(*key)
		if err != nil {
			return err
		}
		out, err := fleet.SignChannel(fleet.Desired{Version: pos[0], URL: pos[1]}, priv)
		if err != nil {
			return err
		}
		_, err = fmt.Printf("%s\n", out)
		return err
	case args[0] == "set-version" && len(pos) == 2:
		cli, err := c.client()
		if err != nil {
			return err
		}
		defer cli.Close()
		return fleet.SetDesired(ctx, cli, c.prefix, fleet.Desired{Version: pos[0], URL: pos[1]})
	case args[0] == "gc" && len(pos) == 0:
		cli, err := c.client()
		if err != nil {
			return err
		}
		defer cli.Close()
		deleted, err := fleet.Cleanup(ctx, cli, c.prefix, *keep)
		for _, v := range deleted {
			fmt.Printf("deleted rollout %s\n", v)
		}
		return err
	case args[0] == "status" && len(pos) == 0:
		cli, err := c.client()
		if err != nil {
			return err
		}
		defer cli.Close()
		st, err := fleet.Status(ctx, cli, c.prefix)
		if err != nil {
			return err
		}
		if g.json {
			e := json.NewEncoder(os.Stdout)
			e.SetIndent("", "  ")
			return e.Encode(struct {
				fleet.FleetStatus
				Progress fleet.Progress `json:"progress"`
			}{st, st.Progress()})
		}
		return printFleet(st)
	}
	return errors.New(usage)
}

func printFleet(st fleet.FleetStatus) error {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "desired: %s %s\n", or(st.Desired.Version, "(none)"), st.Desired.URL)
	if p := st.Progress(); p.Version != "" {
		left := "unknown"
		if p.Left > 0 {
			left = p.Left.Round(time.Second).String()
		}
		if p.Halted {
			left = "halted"
		}
		fmt.Fprintf(w, "progress: %d of %d committed, %d in flight, %d failed, time left: %s\n", p.Committed, p.Total, p.InFlight, p.Failed, left)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "NODE\tVERSION\tSTATE\tTARGET\tUPDATED\tREASON")
	for _, n := range st.Nodes {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", n.Name, n.Version, n.State, or(n.Target, "-"), n.Updated.Format(time.RFC3339), n.Reason)
	}
	fmt.Fprintln(w, "\nPLACE\tNODE\tLEASE")
	for i, p := range st.Places {
		what := "queued"
		if p.Holding {
			what = "holding"
		}
		fmt.Fprintf(w, "%d %s\t%s\t%x\n", i+1, what, p.Node, p.Lease)
	}
	if r := st.Rollout; r.Version != "" {
		fmt.Fprintf(w, "\nrollout %s: %d started, %d failed\n", r.Version, r.Started, r.Failed)
		if r.Halted != "" {
			fmt.Fprintf(w, "  HALTED: %s\n", r.Halted)
		}
		var failed []string
		for n, why := range r.Failures {
			failed = append(failed, n+": "+why)
		}
		sort.Strings(failed)
		if len(failed) > 0 {
			fmt.Fprintf(w, "  failures: %s\n", strings.Join(failed, "; "))
		}
	}
	return w.Flush()
}

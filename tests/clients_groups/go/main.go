// Command spool-group-go runs franz-go consumer-group members (kgo.ConsumerGroup)
// for tests/test_groups.py.
//
//	spool-group-go --bootstrap H:P --topic T --group G [--members N] [--name PREFIX]
//	               [--max-runtime-s S] [--session-timeout-ms MS] [--server-side]
//
// --server-side opts into KIP-848 (ConsumerGroupHeartbeat; the broker assigns).
//
// N members (one client each) in one group, subscribed to T, auto commit off.
// Rebalances are blocked while a poll's records are processed (BlockRebalanceOnPoll):
// a member prints the records, commits them synchronously, then allows rebalancing,
// so a partition never moves with consumed-but-uncommitted records. On stdin "stop"
// (or EOF, or after --max-runtime-s) every member commits, leaves and exits 0.
// stdout lines are those of GroupConsumer.java:
//
//	own <member> <generation> <p,p,...|->
//	rec <member> <partition> <offset> <value>
//	closed <member>
//	error <member> <message>
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

var outMu sync.Mutex

func out(s string) {
	outMu.Lock()
	defer outMu.Unlock()
	os.Stdout.WriteString(s + "\n")
}

func fmtOwned(owned map[int32]bool) string {
	ps := make([]int, 0, len(owned))
	for p := range owned {
		ps = append(ps, int(p))
	}
	if len(ps) == 0 {
		return "-"
	}
	sort.Ints(ps)
	ss := make([]string, len(ps))
	for i, p := range ps {
		ss[i] = strconv.Itoa(p)
	}
	return strings.Join(ss, ",")
}

func runMember(ctx context.Context, member, bootstrap, topic, group string, sessionMs int, serverSide bool) {
	defer out("closed " + member)
	var mu sync.Mutex
	owned := map[int32]bool{}
	var cl *kgo.Client
	report := func() {
		_, gen := cl.GroupMetadata()
		out(fmt.Sprintf("own %s %d %s", member, gen, fmtOwned(owned)))
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(bootstrap),
		kgo.ClientID(member),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.DisableAutoCommit(),
		kgo.BlockRebalanceOnPoll(),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.SessionTimeout(time.Duration(sessionMs) * time.Millisecond),
		kgo.OnPartitionsAssigned(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range m[topic] {
				owned[p] = true
			}
			report()
		}),
		kgo.OnPartitionsRevoked(func(c context.Context, cl *kgo.Client, m map[string][]int32) {
			if err := cl.CommitUncommittedOffsets(c); err != nil {
				out(fmt.Sprintf("error %s commit-on-revoke %v", member, err))
			}
			mu.Lock()
			defer mu.Unlock()
			for _, p := range m[topic] {
				delete(owned, p)
			}
			report()
		}),
		kgo.OnPartitionsLost(func(_ context.Context, _ *kgo.Client, m map[string][]int32) {
			mu.Lock()
			defer mu.Unlock()
			for _, p := range m[topic] {
				delete(owned, p)
			}
			report()
		}),
	}
	if serverSide {
		opts = append(opts, kgo.Balancers(kgo.StickyBalancer()), kgo.ServerSideBalancer())
	}
	var err error
	cl, err = kgo.NewClient(opts...)
	if err != nil {
		out(fmt.Sprintf("error %s %v", member, err))
		return
	}
	defer cl.Close() // leaves the group
	for ctx.Err() == nil {
		pctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		fs := cl.PollFetches(pctx)
		cancel()
		var sb strings.Builder
		n := 0
		fs.EachError(func(t string, p int32, err error) {
			if err != context.DeadlineExceeded && err != context.Canceled {
				out(fmt.Sprintf("error %s fetch %s/%d %v", member, t, p, err))
			}
		})
		fs.EachRecord(func(r *kgo.Record) {
			fmt.Fprintf(&sb, "rec %s %d %d %s\n", member, r.Partition, r.Offset, string(r.Value))
			n++
		})
		if n > 0 {
			outMu.Lock()
			os.Stdout.WriteString(sb.String())
			outMu.Unlock()
			cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
			if err := cl.CommitUncommittedOffsets(cctx); err != nil {
				out(fmt.Sprintf("error %s commit %v", member, err))
			}
			ccancel()
		}
		cl.AllowRebalance()
	}
	cctx, ccancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer ccancel()
	if err := cl.CommitUncommittedOffsets(cctx); err != nil {
		out(fmt.Sprintf("error %s final-commit %v", member, err))
	}
	cl.AllowRebalance()
}

func main() {
	bootstrap := flag.String("bootstrap", "", "")
	topic := flag.String("topic", "", "")
	group := flag.String("group", "", "")
	members := flag.Int("members", 1, "")
	name := flag.String("name", "go", "")
	maxRuntime := flag.Int("max-runtime-s", 150, "")
	sessionMs := flag.Int("session-timeout-ms", 10000, "")
	serverSide := flag.Bool("server-side", false, "")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*maxRuntime)*time.Second)
	defer cancel()
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			if strings.TrimSpace(sc.Text()) == "stop" {
				break
			}
		}
		cancel()
	}()
	var wg sync.WaitGroup
	for i := 0; i < *members; i++ {
		member := *name
		if *members > 1 {
			member = fmt.Sprintf("%s-%d", *name, i)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			runMember(ctx, member, *bootstrap, *topic, *group, *sessionMs, *serverSide)
		}()
	}
	wg.Wait()
}

// Command spool-go-client is the franz-go helper for Spool's cross-client
// tests. Same CLI as tests/clients/clientcli.py:
//
//	produce --bootstrap H:P --topic T --compression C --acks A --input records.jsonl
//	consume --bootstrap H:P --topic T --partitions N --count C --timeout-ms X
//	leader-errors --bootstrap H:P --topic T --partition P   (leader_errors.go)
package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

type inRecord struct {
	Partition *int32      `json:"partition"`
	Key       *string     `json:"key"`
	Value     *string     `json:"value"`
	Headers   [][]*string `json:"headers"`
}

type outRecord struct {
	Partition int32       `json:"partition"`
	Offset    int64       `json:"offset"`
	Key       *string     `json:"key"`
	Value     *string     `json:"value"`
	Headers   [][]*string `json:"headers"`
	Timestamp int64       `json:"timestamp"`
}

func die(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
	os.Exit(1)
}

func dec(s *string) []byte {
	if s == nil {
		return nil
	}
	b, err := base64.StdEncoding.DecodeString(*s)
	if err != nil {
		die("bad base64: %v", err)
	}
	if b == nil {
		b = []byte{}
	}
	return b
}

func enc(b []byte) *string {
	if b == nil {
		return nil
	}
	s := base64.StdEncoding.EncodeToString(b)
	return &s
}

// explicitKey marks records whose partition was given in the input.
type explicitKey struct{}

// mixedPartitioner honours an explicit partition stored in the record's
// context and otherwise defers to franz-go's default partitioner.
type mixedPartitioner struct{ inner kgo.Partitioner }

func (m mixedPartitioner) ForTopic(t string) kgo.TopicPartitioner {
	return &mixedTopicPartitioner{m.inner.ForTopic(t)}
}

type mixedTopicPartitioner struct{ inner kgo.TopicPartitioner }

func explicit(r *kgo.Record) (int32, bool) {
	if r.Context == nil {
		return 0, false
	}
	p, ok := r.Context.Value(explicitKey{}).(int32)
	return p, ok
}

func (m *mixedTopicPartitioner) RequiresConsistency(r *kgo.Record) bool {
	if _, ok := explicit(r); ok {
		return true
	}
	return m.inner.RequiresConsistency(r)
}

func (m *mixedTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if p, ok := explicit(r); ok {
		return int(p)
	}
	return m.inner.Partition(r, n)
}

func (m *mixedTopicPartitioner) OnNewBatch() {
	if nb, ok := m.inner.(kgo.TopicPartitionerOnNewBatch); ok {
		nb.OnNewBatch()
	}
}

func produce(args []string) {
	fs := flag.NewFlagSet("produce", flag.ExitOnError)
	bootstrap := fs.String("bootstrap", "", "")
	topic := fs.String("topic", "", "")
	compression := fs.String("compression", "none", "")
	acks := fs.String("acks", "all", "")
	input := fs.String("input", "", "")
	fs.Parse(args)

	var codec kgo.CompressionCodec
	switch *compression {
	case "none":
		codec = kgo.NoCompression()
	case "gzip":
		codec = kgo.GzipCompression()
	case "snappy":
		codec = kgo.SnappyCompression()
	case "lz4":
		codec = kgo.Lz4Compression()
	case "zstd":
		codec = kgo.ZstdCompression()
	default:
		die("unknown compression %q", *compression)
	}
	opts := []kgo.Opt{
		kgo.SeedBrokers(*bootstrap),
		kgo.ProducerBatchCompression(codec),
		kgo.RecordPartitioner(mixedPartitioner{kgo.StickyKeyPartitioner(nil)}),
		kgo.ProducerLinger(5 * time.Millisecond),
		kgo.RecordDeliveryTimeout(30 * time.Second),
	}
	switch *acks {
	case "all", "-1":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		die("unknown acks %q", *acks)
	}

	f, err := os.Open(*input)
	if err != nil {
		die("%v", err)
	}
	var recs []*kgo.Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		if len(sc.Bytes()) == 0 {
			continue
		}
		var in inRecord
		if err := json.Unmarshal(sc.Bytes(), &in); err != nil {
			die("bad input line: %v", err)
		}
		r := &kgo.Record{Topic: *topic, Key: dec(in.Key), Value: dec(in.Value), Context: context.Background()}
		for _, h := range in.Headers {
			if len(h) != 2 || h[0] == nil {
				die("bad header %v", h)
			}
			r.Headers = append(r.Headers, kgo.RecordHeader{Key: *h[0], Value: dec(h[1])})
		}
		if in.Partition != nil {
			r.Context = context.WithValue(r.Context, explicitKey{}, *in.Partition)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		die("%v", err)
	}

	cl, err := kgo.NewClient(opts...)
	if err != nil {
		die("%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, len(recs))
	for i, r := range recs {
		i := i
		wg.Add(1)
		cl.Produce(ctx, r, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	wg.Wait()
	failed := false
	for i, err := range errs {
		if err != nil {
			fmt.Fprintf(os.Stderr, "record %d: %v\n", i, err)
			failed = true
		}
	}
	if failed {
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, r := range recs {
		off := r.Offset
		if *acks == "0" {
			off = -1
		}
		fmt.Fprintf(w, "{\"partition\":%d,\"offset\":%d}\n", r.Partition, off)
	}
	w.Flush()
}

func consume(args []string) {
	fs := flag.NewFlagSet("consume", flag.ExitOnError)
	bootstrap := fs.String("bootstrap", "", "")
	topic := fs.String("topic", "", "")
	partitions := fs.Int("partitions", 1, "")
	count := fs.Int("count", 0, "")
	timeoutMs := fs.Int("timeout-ms", 30000, "")
	fs.Parse(args)

	parts := map[int32]kgo.Offset{}
	for p := 0; p < *partitions; p++ {
		parts[int32(p)] = kgo.NewOffset().AtStart()
	}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(*bootstrap),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{*topic: parts}),
	)
	if err != nil {
		die("%v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(*timeoutMs)*time.Millisecond)
	defer cancel()
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	enc2 := json.NewEncoder(w)
	got := 0
	for got < *count {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			w.Flush()
			die("timeout: got %d of %d records", got, *count)
		}
		var ferr error
		fetches.EachError(func(t string, p int32, err error) {
			ferr = fmt.Errorf("%s[%d]: %w", t, p, err)
		})
		if ferr != nil {
			w.Flush()
			die("fetch error: %v", ferr)
		}
		fetches.EachRecord(func(r *kgo.Record) {
			hs := [][]*string{}
			for _, h := range r.Headers {
				k := h.Key
				hs = append(hs, []*string{&k, enc(h.Value)})
			}
			enc2.Encode(outRecord{
				Partition: r.Partition, Offset: r.Offset, Key: enc(r.Key), Value: enc(r.Value),
				Headers: hs, Timestamp: r.Timestamp.UnixMilli(),
			})
			got++
		})
	}
}

func main() {
	if len(os.Args) < 2 {
		die("usage: %s {produce|consume|leader-errors|describe-topic-partitions} ...", os.Args[0])
	}
	switch os.Args[1] {
	case "produce":
		produce(os.Args[2:])
	case "consume":
		consume(os.Args[2:])
	case "leader-errors":
		leaderErrors(os.Args[2:])
	case "describe-topic-partitions":
		describeTopicPartitions(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}

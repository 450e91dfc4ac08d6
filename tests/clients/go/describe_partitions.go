package main

// describe-topic-partitions: DescribeTopicPartitions (API 75) on the wire, paged:
//
//	describe-topic-partitions --bootstrap H:P --limit N [--topics a,b]
//
// Sends the request with ResponsePartitionLimit N, follows NextCursor until it is null, and
// prints one JSON object: the pages it took and every (topic, partition, leader) in the order
// the broker answered. Fails if the broker does not serve the API (no fallback: that is what
// the test checks).

import (
	"context"
	"encoding/json"
	"flag"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type describedPartition struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Leader    int32  `json:"leader"`
	Error     int16  `json:"error_code"`
}

func describeTopicPartitions(args []string) {
	fs := flag.NewFlagSet("describe-topic-partitions", flag.ExitOnError)
	bootstrap := fs.String("bootstrap", "", "")
	limit := fs.Int("limit", 2000, "")
	topics := fs.String("topics", "", "")
	fs.Parse(args)

	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*bootstrap, ",")...))
	if err != nil {
		die("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	var out struct {
		Pages      int                  `json:"pages"`
		Partitions []describedPartition `json:"partitions"`
		TopicErrs  map[string]int16     `json:"topic_errors"`
	}
	out.TopicErrs = map[string]int16{}
	var cursor *kmsg.DescribeTopicPartitionsRequestCursor
	for page := 0; page < 10000; page++ {
		req := kmsg.NewPtrDescribeTopicPartitionsRequest()
		req.ResponsePartitionLimit = int32(*limit)
		if *topics != "" {
			for _, name := range strings.Split(*topics, ",") {
				t := kmsg.NewDescribeTopicPartitionsRequestTopic()
				t.Topic = name
				req.Topics = append(req.Topics, t)
			}
		}
		req.Cursor = cursor
		resp, err := req.RequestWith(ctx, cl)
		if err != nil {
			die("describe topic partitions: %v", err)
		}
		out.Pages++
		for _, t := range resp.Topics {
			name := ""
			if t.Topic != nil {
				name = *t.Topic
			}
			if t.ErrorCode != 0 {
				out.TopicErrs[name] = t.ErrorCode
			}
			for _, p := range t.Partitions {
				out.Partitions = append(out.Partitions, describedPartition{name, p.Partition, p.LeaderID, p.ErrorCode})
			}
		}
		if resp.NextCursor == nil {
			break
		}
		c := kmsg.NewDescribeTopicPartitionsRequestCursor()
		c.Topic = resp.NextCursor.Topic
		c.Partition = resp.NextCursor.Partition
		cursor = &c
	}
	json.NewEncoder(os.Stdout).Encode(out)
}

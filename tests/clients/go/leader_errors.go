package main

// leader-errors: the leader checks Kafka makes on Produce and Fetch, seen on the wire
// with the newest versions franz-go and the broker share (franz-go's kmsg encodes and
// decodes every field, tagged ones included):
//
//	leader-errors --bootstrap H:P --topic T --partition P
//
// Sends a Produce and a Fetch to a follower of the partition (expected:
// NOT_LEADER_OR_FOLLOWER with the current leader and its endpoint, KIP-951), and
// Fetches to the leader with the leader epoch one too old, one too new and right
// (FENCED_LEADER_EPOCH, UNKNOWN_LEADER_EPOCH, none). Prints one JSON object.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"hash/crc32"
	"os"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

type leaderAnswer struct {
	Version       int16   `json:"version"`
	ErrorCode     int16   `json:"error_code"`
	CurrentLeader int32   `json:"current_leader"`
	CurrentEpoch  int32   `json:"current_leader_epoch"`
	Endpoints     []int32 `json:"endpoints"`
}

type leaderReport struct {
	Leader        int32        `json:"leader"`
	LeaderEpoch   int32        `json:"leader_epoch"`
	Follower      int32        `json:"follower"`
	FollowerProd  leaderAnswer `json:"produce_to_follower"`
	FollowerFetch leaderAnswer `json:"fetch_from_follower"`
	StaleEpoch    leaderAnswer `json:"fetch_stale_epoch"`
	FutureEpoch   leaderAnswer `json:"fetch_future_epoch"`
	RightEpoch    leaderAnswer `json:"fetch_right_epoch"`
}

// oneRecordBatch is a valid magic-2 batch of one record (no producer id).
func oneRecordBatch() []byte {
	rec := kmsg.Record{Value: []byte("leader-errors")}
	body := rec.AppendTo(nil)
	rec.Length = int32(len(body) - 1) // the zero length itself took one byte
	records := rec.AppendTo(nil)
	now := time.Now().UnixMilli()
	batch := kmsg.RecordBatch{
		Magic: 2, FirstTimestamp: now, MaxTimestamp: now,
		ProducerID: -1, ProducerEpoch: -1, FirstSequence: -1,
		NumRecords: 1, Records: records,
	}
	b := batch.AppendTo(nil)
	binary.BigEndian.PutUint32(b[8:12], uint32(len(b)-12))
	crc := crc32.Checksum(b[21:], crc32.MakeTable(crc32.Castagnoli))
	binary.BigEndian.PutUint32(b[17:21], crc)
	return b
}

// nodeIDs lists the node ids of a response's NodeEndpoints (Produce and Fetch each have
// their own type for them).
func nodeIDs[T any](eps []T, id func(T) int32) []int32 {
	ids := []int32{}
	for _, e := range eps {
		ids = append(ids, id(e))
	}
	return ids
}

func leaderErrors(args []string) {
	fs := flag.NewFlagSet("leader-errors", flag.ExitOnError)
	bootstrap := fs.String("bootstrap", "", "")
	topic := fs.String("topic", "", "")
	partition := fs.Int("partition", 0, "")
	fs.Parse(args)

	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*bootstrap, ",")...))
	if err != nil {
		die("client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	md := kmsg.NewPtrMetadataRequest()
	mt := kmsg.NewMetadataRequestTopic()
	mt.Topic = topic
	md.Topics = append(md.Topics, mt)
	mresp, err := md.RequestWith(ctx, cl)
	if err != nil {
		die("metadata: %v", err)
	}
	if len(mresp.Topics) != 1 || mresp.Topics[0].ErrorCode != 0 {
		die("metadata: topic %s not found", *topic)
	}
	t := mresp.Topics[0]
	var rep leaderReport
	rep.Follower = -1
	found := false
	for _, p := range t.Partitions {
		if p.Partition != int32(*partition) {
			continue
		}
		found = true
		rep.Leader, rep.LeaderEpoch = p.Leader, p.LeaderEpoch
		for _, r := range p.Replicas {
			if r != p.Leader {
				rep.Follower = r
				break
			}
		}
	}
	if !found || rep.Leader < 0 || rep.Follower < 0 {
		die("metadata: partition %d has no leader and follower", *partition)
	}

	prod := kmsg.NewPtrProduceRequest()
	prod.Acks = -1
	prod.TimeoutMillis = 5000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = *topic
	pt.TopicID = t.TopicID
	pp := kmsg.NewProduceRequestTopicPartition()
	pp.Partition = int32(*partition)
	pp.Records = oneRecordBatch()
	pt.Partitions = append(pt.Partitions, pp)
	prod.Topics = append(prod.Topics, pt)
	presp, err := cl.Broker(int(rep.Follower)).Request(ctx, prod)
	if err != nil {
		die("produce to follower: %v", err)
	}
	pr := presp.(*kmsg.ProduceResponse)
	if len(pr.Topics) != 1 || len(pr.Topics[0].Partitions) != 1 {
		die("produce to follower: %d topics in the answer", len(pr.Topics))
	}
	ppr := pr.Topics[0].Partitions[0]
	rep.FollowerProd = leaderAnswer{pr.Version, ppr.ErrorCode, ppr.CurrentLeader.LeaderID,
		ppr.CurrentLeader.LeaderEpoch, nodeIDs(pr.Brokers, func(b kmsg.ProduceResponseBroker) int32 { return b.NodeID })}

	fetch := func(broker int32, epoch int32) leaderAnswer {
		req := kmsg.NewPtrFetchRequest()
		req.ReplicaID = -1
		req.MaxWaitMillis = 0
		req.MinBytes = 1
		req.MaxBytes = 1 << 20
		req.SessionEpoch = -1
		ft := kmsg.NewFetchRequestTopic()
		ft.Topic = *topic
		ft.TopicID = t.TopicID
		fp := kmsg.NewFetchRequestTopicPartition()
		fp.Partition = int32(*partition)
		fp.CurrentLeaderEpoch = epoch
		fp.FetchOffset = 0
		fp.LogStartOffset = -1
		fp.PartitionMaxBytes = 1 << 20
		ft.Partitions = append(ft.Partitions, fp)
		req.Topics = append(req.Topics, ft)
		resp, err := cl.Broker(int(broker)).Request(ctx, req)
		if err != nil {
			die("fetch from %d: %v", broker, err)
		}
		fr := resp.(*kmsg.FetchResponse)
		if fr.ErrorCode != 0 || len(fr.Topics) != 1 || len(fr.Topics[0].Partitions) != 1 {
			die("fetch from %d: error %d, %d topics", broker, fr.ErrorCode, len(fr.Topics))
		}
		p := fr.Topics[0].Partitions[0]
		return leaderAnswer{fr.Version, p.ErrorCode, p.CurrentLeader.LeaderID,
			p.CurrentLeader.LeaderEpoch, nodeIDs(fr.Brokers, func(b kmsg.FetchResponseBroker) int32 { return b.NodeID })}
	}
	rep.FollowerFetch = fetch(rep.Follower, rep.LeaderEpoch)
	rep.StaleEpoch = fetch(rep.Leader, rep.LeaderEpoch-1)
	rep.FutureEpoch = fetch(rep.Leader, rep.LeaderEpoch+1)
	rep.RightEpoch = fetch(rep.Leader, rep.LeaderEpoch)
	json.NewEncoder(os.Stdout).Encode(rep)
}

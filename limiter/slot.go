package limiter

import (
	"strconv"
	"strings"
	"sync"
)

// clusterSlot is the Redis Cluster hash slot of key: CRC16 (XModem) of its
// hash tag — the part between the first '{' and the next '}' when that is
// not empty — or of the whole key, modulo 16384. A script call carries the
// checks of one slot.
func clusterSlot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return crc16(key) % 16384
}

func crc16(s string) uint16 {
	var crc uint16
	for k := 0; k < len(s); k++ {
		crc ^= uint16(s[k]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// slotTag returns a short hash tag whose keys are in Cluster slot slot:
// the first of the base-36 numbers 0, 1, 2, ... that hashes to it.
func slotTag(slot uint16) string { return slotTags()[slot] }

// slotTags finds a tag for each of the 16384 slots, once; about 180,000
// CRC16s of two to four bytes.
var slotTags = sync.OnceValue(func() *[16384]string {
	var tags [16384]string
	for n, left := uint64(0), len(tags); left > 0; n++ {
		tag := strconv.FormatUint(n, 36)
		if s := crc16(tag) % 16384; tags[s] == "" {
			tags[s] = tag
			left--
		}
	}
	return &tags
})

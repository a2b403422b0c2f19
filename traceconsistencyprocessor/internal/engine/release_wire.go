package engine

import "encoding/binary"

// The protobuf wire reading of the release builder: one pass over a message's fields into
// the builder's scratch, checking the wire types each message expects and counting its
// repeated fields on the way.

// Wire types, as in the protobuf encoding.
const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
	wireI32    = 5
)

// field is one field of a message as scan read it: its number and wire type, its value for
// the scalar wire types; for a length-delimited one v is the length and off where its
// bytes start in the message (field.bytes).
type field struct {
	v    uint64
	off  int
	num  int32
	wire int8
}

// bytes returns a length-delimited field's bytes within msg, the message scan read it from.
func (f *field) bytes(msg []byte) []byte { return msg[f.off : f.off+int(f.v)] }

// varint decodes a varint as pdata's decoder does (bits above the 64th are dropped).
func varint(buf []byte, pos int) (uint64, int, error) {
	if pos < len(buf) && buf[pos] < 0x80 {
		return uint64(buf[pos]), pos + 1, nil
	}
	return varintSlow(buf, pos)
}

func varintSlow(buf []byte, pos int) (uint64, int, error) {
	var num uint64
	for shift := uint(0); ; shift += 7 {
		if shift >= 64 || pos >= len(buf) {
			return 0, 0, errFallback
		}
		c := buf[pos]
		pos++
		num |= uint64(c&0x7F) << shift
		if c < 0x80 {
			return num, pos, nil
		}
	}
}

// scan reads the fields of msg once, appending those it knows (numbers 1..16 with a wire
// type in want) to b.fields after the ones of the messages being built around it, and
// returns where they start; the caller truncates b.fields back to it when done. Each known
// field's wire type must be the one in want; a field numbered refuse, anything
// ProtoUnmarshaler would refuse, and groups give errFallback. When c is not nil it counts
// the known fields by number.
func (b *releaseBuilder) scan(msg []byte, want *[17]int8, refuse int32, c *[17]int32) (int, error) {
	start := len(b.fields)
	for pos := 0; pos < len(msg); {
		// One-byte tags and lengths are the usual case; the slow path decodes the rest.
		var tag uint64
		if t := msg[pos]; t < 0x80 {
			tag = uint64(t)
			pos++
		} else {
			var err error
			if tag, pos, err = varintSlow(msg, pos); err != nil {
				return 0, err
			}
		}
		num, wire := int32(tag>>3), int8(tag&7)
		if num <= 0 || num == refuse {
			return 0, errFallback
		}
		var v uint64
		off := 0
		switch wire {
		case wireVarint, wireLen:
			// A varint, or a length before the bytes.
			if pos < len(msg) && msg[pos] < 0x80 {
				v = uint64(msg[pos])
				pos++
			} else {
				var err error
				if v, pos, err = varintSlow(msg, pos); err != nil {
					return 0, err
				}
			}
			if wire == wireLen {
				if v > uint64(len(msg)-pos) {
					return 0, errFallback
				}
				off = pos
				pos += int(v)
			}
		case wireI64:
			if len(msg)-pos < 8 {
				return 0, errFallback
			}
			v = binary.LittleEndian.Uint64(msg[pos:])
			pos += 8
		case wireI32:
			if len(msg)-pos < 4 {
				return 0, errFallback
			}
			v = uint64(binary.LittleEndian.Uint32(msg[pos:]))
			pos += 4
		default:
			return 0, errFallback
		}
		if num > 16 {
			continue
		}
		w := want[num]
		if w == 0 {
			continue
		}
		if w-1 != wire {
			return 0, errFallback
		}
		if c != nil {
			c[num]++
		}
		b.fields = append(b.fields, field{v: v, off: off, num: num, wire: wire})
	}
	return start, nil
}

// Expected wire types (plus one; 0: unknown field) of each message's fields.
var (
	wantRequest       = [17]int8{1: wireLen + 1}
	wantResourceSpans = [17]int8{1: wireLen + 1, 2: wireLen + 1, 3: wireLen + 1}
	wantResource      = [17]int8{1: wireLen + 1, 2: wireVarint + 1, 3: wireLen + 1}
	wantScopeSpans    = [17]int8{1: wireLen + 1, 2: wireLen + 1, 3: wireLen + 1}
	wantScope         = [17]int8{1: wireLen + 1, 2: wireLen + 1, 3: wireLen + 1, 4: wireVarint + 1}
	wantSpan          = [17]int8{1: wireLen + 1, 2: wireLen + 1, 3: wireLen + 1, 4: wireLen + 1, 5: wireLen + 1,
		6: wireVarint + 1, 7: wireI64 + 1, 8: wireI64 + 1, 9: wireLen + 1, 10: wireVarint + 1, 11: wireLen + 1,
		12: wireVarint + 1, 13: wireLen + 1, 14: wireVarint + 1, 15: wireLen + 1, 16: wireI32 + 1}
	wantEvent    = [17]int8{1: wireI64 + 1, 2: wireLen + 1, 3: wireLen + 1, 4: wireVarint + 1}
	wantLink     = [17]int8{1: wireLen + 1, 2: wireLen + 1, 3: wireLen + 1, 4: wireLen + 1, 5: wireVarint + 1, 6: wireI32 + 1}
	wantStatus   = [17]int8{2: wireLen + 1, 3: wireVarint + 1}
	wantKeyValue = [17]int8{1: wireLen + 1, 2: wireLen + 1, 3: wireVarint + 1}
	wantAnyValue = [17]int8{1: wireLen + 1, 2: wireVarint + 1, 3: wireVarint + 1, 4: wireI64 + 1,
		5: wireLen + 1, 6: wireLen + 1, 7: wireLen + 1, 8: wireVarint + 1}
	wantValues = [17]int8{1: wireLen + 1} // ArrayValue and KeyValueList
)

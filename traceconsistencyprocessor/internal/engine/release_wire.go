package engine

// The protobuf wire reading of the release builder: fields, varints, the per-message
// count of repeated fields and the wire types each message expects.

// Wire types, as in the protobuf encoding.
const (
	wireVarint = 0
	wireI64    = 1
	wireLen    = 2
	wireI32    = 5
)

// field is one decoded field of a message: its number and wire type, its value for the
// scalar wire types, its bytes for a length-delimited one.
type field struct {
	num  int32
	wire int8
	v    uint64
	data []byte
}

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

// next decodes the field at pos. Anything ProtoUnmarshaler would refuse, and groups, give
// errFallback.
func next(buf []byte, pos int) (field, int, error) {
	tag, pos, err := varint(buf, pos)
	if err != nil {
		return field{}, 0, err
	}
	f := field{num: int32(tag >> 3), wire: int8(tag & 7)}
	if f.num <= 0 {
		return field{}, 0, errFallback
	}
	switch f.wire {
	case wireVarint:
		f.v, pos, err = varint(buf, pos)
		return f, pos, err
	case wireI64:
		if len(buf)-pos < 8 {
			return field{}, 0, errFallback
		}
		b := buf[pos : pos+8]
		f.v = uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24 |
			uint64(b[4])<<32 | uint64(b[5])<<40 | uint64(b[6])<<48 | uint64(b[7])<<56
		return f, pos + 8, nil
	case wireI32:
		if len(buf)-pos < 4 {
			return field{}, 0, errFallback
		}
		b := buf[pos : pos+4]
		f.v = uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
		return f, pos + 4, nil
	case wireLen:
		var l uint64
		l, pos, err = varint(buf, pos)
		if err != nil {
			return field{}, 0, err
		}
		if l > uint64(len(buf)-pos) {
			return field{}, 0, errFallback
		}
		f.data = buf[pos : pos+int(l)]
		return f, pos + int(l), nil
	default:
		return field{}, 0, errFallback
	}
}

// counts walks a message's fields once and counts those numbered 1..15 and 16 (index 0),
// checking each known field's wire type against want (0 for a field the message does not
// know, which is skipped). It refuses the fields in refuse.
func counts(buf []byte, want *[17]int8, refuse func(int32) bool) ([17]int, error) {
	var c [17]int
	for pos := 0; pos < len(buf); {
		f, p, err := next(buf, pos)
		if err != nil {
			return c, err
		}
		pos = p
		if refuse != nil && refuse(f.num) {
			return c, errFallback
		}
		if f.num <= 16 {
			if w := want[f.num]; w != 0 {
				if w-1 != f.wire {
					return c, errFallback
				}
				c[f.num]++
			}
		}
	}
	return c, nil
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

package appsandbooks

import (
	"bytes"
	"strconv"
	"strings"
	"unicode/utf8"
)

// decodePageFast reads an asset page as Apple writes it: plain strings,
// integer counts, every key once. Knowing the page's shape, it takes about
// half the time of segmentio's decoder (BenchmarkDecodePage) and allocates
// little: the page's adamIDs share one string, its platform lists one
// array, and the values Apple documents for productType, pricingParam and
// supportedPlatforms are not copied at all.
//
// It gives up (ok false) on an error body (a top-level errorNumber, in any
// case) and on anything it does not handle exactly as segmentio's decoder
// would: an escape inside a field it keeps, a number that is not a plain
// integer, a repeated key, a key that matches a field only when case is
// ignored, a value of an unexpected type, invalid JSON. attempt then reads
// the page with segmentio's decoder (decodePageGeneral), so the answer is
// always that decoder's; FuzzDecodePage holds the two to that.
func decodePageFast(body []byte) (resp *assetsResponse, ok bool) {
	d := pageDecoder{b: body}
	resp = &assetsResponse{}
	if !d.page(resp) {
		return nil, false
	}
	d.space()
	if d.i != len(d.b) {
		return nil, false
	}
	d.shareIDs(resp)
	return resp, true
}

type pageDecoder struct {
	b []byte
	i int
	// ids and unlimitedIDs hold where each asset's adamId is in b, for
	// resp.Assets and resp.UnlimitedAssets; shareIDs copies them into one
	// string at the end.
	ids, unlimitedIDs []span
	platforms         []string
}

type span struct{ from, to int32 }

// maxDepth bounds the nesting of values the decoder skips.
const maxDepth = 64

const (
	pageAssets = 1 << iota
	pageUnlimited
	pageCurrent
	pageNext
	pageTotal
	pageVersion
	pageMDM
	pageExpiry
	pageUID
)

// pageKeys are the keys the decoder does not skip: the page's fields, and
// errorNumber, which makes the body an error (attempt relies on the fast
// path never accepting a body with one).
var pageKeys = []string{"assets", "unlimitedAssets", "currentPageIndex", "nextPageIndex", "totalPages", "versionId", "mdmInfo", "tokenExpirationDate", "uId", "errorNumber"}

func (d *pageDecoder) page(resp *assetsResponse) bool {
	var seen uint
	return d.object(func(key []byte) bool {
		bit := 0
		switch string(key) {
		case "assets":
			bit = pageAssets
		case "unlimitedAssets":
			bit = pageUnlimited
		case "currentPageIndex":
			bit = pageCurrent
		case "nextPageIndex":
			bit = pageNext
		case "totalPages":
			bit = pageTotal
		case "versionId":
			bit = pageVersion
		case "mdmInfo":
			bit = pageMDM
		case "tokenExpirationDate":
			bit = pageExpiry
		case "uId":
			bit = pageUID
		default:
			return d.unknown(key, pageKeys)
		}
		if seen&uint(bit) != 0 {
			return false
		}
		seen |= uint(bit)
		if d.null() {
			return true // encoding/json leaves the field as it is
		}
		switch bit {
		case pageAssets:
			return d.assets(&resp.Assets, &d.ids)
		case pageUnlimited:
			return d.assets(&resp.UnlimitedAssets, &d.unlimitedIDs)
		case pageCurrent:
			return d.int(&resp.CurrentPageIndex)
		case pageNext:
			resp.NextPageIndex = new(int)
			return d.int(resp.NextPageIndex)
		case pageTotal:
			return d.int(&resp.TotalPages)
		case pageVersion:
			return d.str(&resp.VersionID)
		case pageMDM:
			resp.MDMInfo = &mdmInfo{}
			return d.mdmInfo(resp.MDMInfo)
		case pageExpiry:
			return d.str(&resp.TokenExpirationDate)
		default:
			return d.str(&resp.UID)
		}
	})
}

var mdmKeys = []string{"id", "name", "metadata"}

func (d *pageDecoder) mdmInfo(m *mdmInfo) bool {
	var seen uint
	return d.object(func(key []byte) bool {
		var field *string
		bit := uint(1)
		switch string(key) {
		case "id":
			field = &m.ID
		case "name":
			field, bit = &m.Name, 2
		case "metadata":
			field, bit = &m.Metadata, 4
		default:
			return d.unknown(key, mdmKeys)
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		return d.null() || d.str(field)
	})
}

var assetKeys = []string{"adamId", "pricingParam", "productType", "availableCount", "assignedCount", "retiredCount", "totalCount", "supportedPlatforms"}

func (d *pageDecoder) assets(into *[]responseAsset, ids *[]span) bool {
	// Apple's assets take about 200 bytes each: sizing the list from what
	// is left of the page saves growing it several times.
	list := make([]responseAsset, 0, min((len(d.b)-d.i)/180+1, 4096))
	if d.platforms == nil {
		d.platforms = make([]string, 0, 2*cap(list))
	}
	ok := d.array(func() bool {
		if d.i >= len(d.b) || d.b[d.i] != '{' {
			return false // null or another type as an element: leave it to segmentio
		}
		list = append(list, responseAsset{})
		id, ok := d.asset(&list[len(list)-1])
		*ids = append(*ids, id)
		return ok
	})
	*into = list
	return ok
}

// asset reads one asset, all but its adamId, and says where that is.
func (d *pageDecoder) asset(a *responseAsset) (id span, ok bool) {
	var seen uint
	ok = d.object(func(key []byte) bool {
		bit := uint(0)
		switch string(key) {
		case "adamId":
			bit = 1
		case "pricingParam":
			bit = 2
		case "productType":
			bit = 4
		case "availableCount":
			bit = 8
		case "assignedCount":
			bit = 16
		case "retiredCount":
			bit = 32
		case "totalCount":
			bit = 64
		case "supportedPlatforms":
			bit = 128
		default:
			return d.unknown(key, assetKeys)
		}
		if seen&bit != 0 {
			return false
		}
		seen |= bit
		if d.null() {
			return true
		}
		switch bit {
		case 1:
			s, ok := d.raw()
			id = s
			return ok
		case 2:
			return d.known(&a.PricingParam)
		case 4:
			return d.known(&a.ProductType)
		case 8:
			return d.int(&a.AvailableCount)
		case 16:
			return d.int(&a.AssignedCount)
		case 32:
			return d.int(&a.RetiredCount)
		case 64:
			return d.int(&a.TotalCount)
		default:
			return d.platformList(&a.SupportedPlatforms)
		}
	})
	return id, ok
}

// platformList keeps an asset's platforms in the page's shared array; the
// slice's capacity ends at its length, so an append by a caller copies
// rather than overwriting the next asset's.
func (d *pageDecoder) platformList(into *[]string) bool {
	from := len(d.platforms)
	ok := d.array(func() bool {
		var p string
		ok := d.known(&p)
		d.platforms = append(d.platforms, p)
		return ok
	})
	to := len(d.platforms)
	*into = d.platforms[from:to:to]
	return ok
}

// shareIDs gives every asset its adamId, cut from one string holding all
// of the page's.
func (d *pageDecoder) shareIDs(resp *assetsResponse) {
	n := 0
	for _, ids := range [][]span{d.ids, d.unlimitedIDs} {
		for _, s := range ids {
			n += int(s.to - s.from)
		}
	}
	var sb strings.Builder
	sb.Grow(n)
	for _, ids := range [][]span{d.ids, d.unlimitedIDs} {
		for _, s := range ids {
			sb.Write(d.b[s.from:s.to])
		}
	}
	all, at := sb.String(), 0
	for _, l := range []struct {
		assets []responseAsset
		ids    []span
	}{{resp.Assets, d.ids}, {resp.UnlimitedAssets, d.unlimitedIDs}} {
		for i, s := range l.ids {
			n := int(s.to - s.from)
			l.assets[i].AdamID = all[at : at+n]
			at += n
		}
	}
}

// object reads an object, calling field with each key once the decoder
// stands before its value.
func (d *pageDecoder) object(field func(key []byte) bool) bool {
	if !d.next('{') {
		return false
	}
	if d.next('}') {
		return true
	}
	for {
		d.space()
		key, ok := d.raw()
		if !ok || !d.next(':') {
			return false
		}
		d.space()
		if !field(d.b[key.from:key.to]) {
			return false
		}
		if d.next('}') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// array reads an array, calling elem with the decoder before each element.
func (d *pageDecoder) array(elem func() bool) bool {
	if !d.next('[') {
		return false
	}
	if d.next(']') {
		return true
	}
	for {
		d.space()
		if !elem() {
			return false
		}
		if d.next(']') {
			return true
		}
		if !d.next(',') {
			return false
		}
	}
}

// unknown skips the value of a key the page type does not have. A key
// that is one of the fields in another case, or not plain ASCII, is left
// to segmentio, which matches keys without regard to case.
func (d *pageDecoder) unknown(key []byte, fields []string) bool {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	for _, f := range fields {
		if len(key) == len(f) && bytes.EqualFold(key, []byte(f)) {
			return false
		}
	}
	return d.skip(0)
}

// space skips JSON whitespace.
func (d *pageDecoder) space() {
	if d.i < len(d.b) && d.b[d.i] > ' ' {
		return // the usual case: Apple's pages have no whitespace
	}
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// next consumes c, after any whitespace, if it comes next.
func (d *pageDecoder) next(c byte) bool {
	d.space()
	if d.i < len(d.b) && d.b[d.i] == c {
		d.i++
		return true
	}
	return false
}

var (
	nullLit  = []byte("null")
	literals = [][]byte{[]byte("true"), []byte("false"), nullLit}
)

// null consumes a null literal if one comes next.
func (d *pageDecoder) null() bool {
	if d.i < len(d.b) && d.b[d.i] == 'n' && bytes.HasPrefix(d.b[d.i:], nullLit) {
		d.i += 4
		return true
	}
	return false
}

// raw reads a string without escapes and returns where its contents are.
// Control characters and invalid UTF-8 make it give up.
func (d *pageDecoder) raw() (span, bool) {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return span{}, false
	}
	from, i := d.i+1, d.i+1
	ascii := true
	for ; i < len(d.b); i++ {
		c := d.b[i]
		if plain[c] {
			continue
		}
		if c == '"' {
			break
		}
		if c == '\\' || c < 0x20 {
			return span{}, false
		}
		ascii = false
	}
	if i >= len(d.b) || int64(i) >= 1<<31 || !ascii && !utf8.Valid(d.b[from:i]) {
		return span{}, false
	}
	d.i = i + 1
	return span{int32(from), int32(i)}, true
}

// plain holds the bytes a string may hold as they are: printable ASCII
// other than the quote and the backslash.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

func (d *pageDecoder) str(into *string) bool {
	s, ok := d.raw()
	if ok {
		*into = string(d.b[s.from:s.to])
	}
	return ok
}

// known reads a string, sharing the values Apple documents for
// productType, pricingParam and supportedPlatforms instead of copying them.
func (d *pageDecoder) known(into *string) bool {
	s, ok := d.raw()
	if !ok {
		return false
	}
	switch v := d.b[s.from:s.to]; string(v) {
	case "App":
		*into = "App"
	case "Book":
		*into = "Book"
	case "STDQ":
		*into = "STDQ"
	case "PLUS":
		*into = "PLUS"
	case "iOS":
		*into = "iOS"
	case "macOS":
		*into = "macOS"
	case "tvOS":
		*into = "tvOS"
	case "watchOS":
		*into = "watchOS"
	case "visionOS":
		*into = "visionOS"
	default:
		*into = string(v)
	}
	return true
}

// maxIntDigits is the most digits an int always holds: 18 where int has 64
// bits, 9 where it has 32.
const maxIntDigits = strconv.IntSize * 9 / 32

// int reads a plain integer: no fraction, no exponent, at most
// maxIntDigits digits. Anything else is left to segmentio, which refuses
// some and not others.
func (d *pageDecoder) int(into *int) bool {
	i, neg := d.i, false
	if i < len(d.b) && d.b[i] == '-' {
		neg = true
		i++
	}
	from, n := i, 0
	for ; i < len(d.b) && d.b[i] >= '0' && d.b[i] <= '9'; i++ {
		n = n*10 + int(d.b[i]-'0')
	}
	digits := i - from
	if digits == 0 || digits > maxIntDigits || (digits > 1 && d.b[from] == '0') {
		return false
	}
	if i < len(d.b) {
		switch d.b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
		default:
			return false
		}
	}
	if neg {
		n = -n
	}
	*into, d.i = n, i
	return true
}

// skip passes over one value of any type, checking that it is valid JSON.
func (d *pageDecoder) skip(depth int) bool {
	if depth > maxDepth || d.i >= len(d.b) {
		return false
	}
	switch c := d.b[d.i]; {
	case c == '"':
		return d.skipString()
	case c == '{':
		// A key with an escape gives up here, as in the fields kept.
		return d.object(func([]byte) bool { return d.skip(depth + 1) })
	case c == '[':
		return d.array(func() bool { return d.skip(depth + 1) })
	case c == '-' || (c >= '0' && c <= '9'):
		return d.skipNumber()
	default:
		for _, lit := range literals {
			if bytes.HasPrefix(d.b[d.i:], lit) {
				d.i += len(lit)
				return true
			}
		}
		return false
	}
}

// skipString passes over a string, escapes included.
func (d *pageDecoder) skipString() bool {
	if d.i >= len(d.b) || d.b[d.i] != '"' {
		return false
	}
	ascii := true
	from := d.i + 1
	for i := from; i < len(d.b); i++ {
		switch c := d.b[i]; {
		case c == '"':
			if !ascii && !utf8.Valid(d.b[from:i]) {
				return false
			}
			d.i = i + 1
			return true
		case c < 0x20:
			return false
		case c >= utf8.RuneSelf:
			ascii = false
		case c == '\\':
			i++
			if i >= len(d.b) {
				return false
			}
			switch d.b[i] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			case 'u':
				if i+4 >= len(d.b) {
					return false
				}
				for _, h := range d.b[i+1 : i+5] {
					if !isHex(h) {
						return false
					}
				}
				i += 4
			default:
				return false
			}
		}
	}
	return false
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// skipNumber passes over a number as JSON's grammar has it.
func (d *pageDecoder) skipNumber() bool {
	b, i := d.b, d.i
	if b[i] == '-' {
		i++
	}
	digits := func() bool {
		from := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		return i > from
	}
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case !digits():
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if !digits() {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if !digits() {
			return false
		}
	}
	d.i = i
	return true
}

package appsandbooks

import (
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"

	fastjson "github.com/segmentio/encoding/json"

	"github.com/orchard-msp/orchard/modules/apple/appletest"
)

// assetPage is a page as the fake Apple writes it: n assets, Apple's
// envelope, encoding/json's output.
func assetPage(t testing.TB, n int) []byte {
	t.Helper()
	next := 3
	b, err := json.Marshal(map[string]any{
		"assets": appletest.MakeAssets(n), "currentPageIndex": 2, "nextPageIndex": next, "size": n,
		"tokenExpirationDate": "2030-11-08T22:33:22+0000", "totalPages": 20, "uId": "2049025000431439",
		"versionId": "70e8c740-514c-11eb-bb63-a90b882fcd52",
		"mdmInfo":   map[string]string{"id": "a1b2", "metadata": "orchard", "name": "Orchard"},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// reference is how asset pages were decoded before the fast path: segmentio's
// decoder alone.
func reference(body []byte) (*assetsResponse, error) {
	var resp assetsResponse
	err := fastjson.Unmarshal(body, &resp)
	return &resp, err
}

func equalPages(t *testing.T, body []byte) {
	t.Helper()
	got, ok := decodePageFast(body)
	if !ok {
		return
	}
	want, err := reference(body)
	if err != nil {
		t.Fatalf("the fast path accepted a page segmentio refuses (%v):\n%q", err, body)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the fast path and segmentio differ on\n%q\nfast: %+v\nsegmentio: %+v", body, got, want)
	}
}

// The pages Apple sends take the fast path, and it reads them as
// segmentio does.
func TestDecodePageFast(t *testing.T) {
	doc, err := os.ReadFile("../appletest/testdata/assets_page.json")
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"documented example":     doc,
		"fake Apple's 500":       assetPage(t, 500),
		"one asset":              assetPage(t, 1),
		"no assets":              assetPage(t, 0),
		"unlimited assets first": []byte(`{"unlimitedAssets":[{"adamId":"2","productType":"Book"}],"assets":[{"adamId":"1","supportedPlatforms":[]}],"totalPages":1}`),
		"nulls":                  []byte(`{"assets":[{"adamId":null,"pricingParam":null,"totalCount":null,"supportedPlatforms":null}],"nextPageIndex":null,"mdmInfo":null,"uId":null}`),
		"unknown fields of every kind": []byte(`{"x":{"a":[1,-2.5e+3,true,false,null,"q\"\\\/\u00e9"]},"assets":[{"adamId":"7","new":[[{}]]}],` +
			"\n\t\"size\" : 1 , \"name\": \"Zürich\"}"),
		"negative and zero counts": []byte(`{"assets":[{"adamId":"1","retiredCount":-0,"totalCount":0,"availableCount":-7}]}`),
		"unfamiliar values":        []byte(`{"assets":[{"adamId":"1","pricingParam":"GOLD","productType":"Movie","supportedPlatforms":["iOS","carOS"]}]}`),
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := decodePageFast(body); !ok {
				t.Fatalf("fell back to segmentio on\n%s", body)
			}
			equalPages(t, body)
		})
	}
}

// What the fast path does not handle exactly as segmentio would, it leaves
// to segmentio.
func TestDecodePageFallsBack(t *testing.T) {
	for name, body := range map[string]string{
		"escape in a kept string":   `{"versionId":"a\u0062c"}`,
		"key in another case":       `{"Assets":[{"adamId":"1"}]}`,
		"field in another case":     `{"assets":[{"ADAMID":"1"}]}`,
		"repeated key":              `{"totalPages":1,"totalPages":2}`,
		"repeated asset key":        `{"assets":[{"adamId":"1","adamId":"2"}]}`,
		"fraction":                  `{"totalPages":1.0}`,
		"exponent":                  `{"totalPages":1e2}`,
		"leading zero":              `{"totalPages":01}`,
		"huge":                      `{"totalPages":12345678901234567890}`,
		"string for a number":       `{"totalPages":"1"}`,
		"number for a string":       `{"assets":[{"adamId":1}]}`,
		"null asset":                `{"assets":[null]}`,
		"not an object":             `[]`,
		"trailing data":             `{"assets":[]} {}`,
		"truncated":                 `{"assets":[{"adamId":"1"`,
		"invalid UTF-8":             "{\"uId\":\"\xff\"}",
		"control character":         "{\"uId\":\"a\tb\"}",
		"non-ASCII key":             `{"ässets":[]}`,
		"deep unknown value":        `{"x":` + strings.Repeat("[", 100) + strings.Repeat("]", 100) + `}`,
		"bad escape when skipped":   `{"x":"\q"}`,
		"error body":                `{"errorNumber":9622,"errorMessage":"Invalid authentication token"}`,
		"error key in another case": `{"assets":[],"ErrorNumber":9646}`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, ok := decodePageFast([]byte(body)); ok {
				t.Fatalf("the fast path took %s", body)
			}
		})
	}
}

// An asset's platforms are its own: appending to them does not change the
// next asset's.
func TestDecodePagePlatformsAreSeparate(t *testing.T) {
	p, ok := decodePageFast([]byte(`{"assets":[{"adamId":"1","supportedPlatforms":["iOS"]},{"adamId":"2","supportedPlatforms":["macOS"]}]}`))
	if !ok {
		t.Fatal("fell back")
	}
	_ = append(p.Assets[0].SupportedPlatforms, "tvOS")
	if got := p.Assets[1].SupportedPlatforms; !reflect.DeepEqual(got, []string{"macOS"}) {
		t.Fatalf("second asset's platforms = %v", got)
	}
}

// FuzzDecodePage holds the fast path to segmentio: whenever it accepts a
// page, segmentio accepts it too and reads the same values.
func FuzzDecodePage(f *testing.F) {
	f.Add(assetPage(f, 3))
	f.Add([]byte(`{"assets":[{"adamId":"1","supportedPlatforms":["iOS"]}],"unlimitedAssets":[],"mdmInfo":{"id":"x","name":"n","metadata":"m"},"nextPageIndex":-0}`))
	f.Add([]byte(`{"x":[1,-2.5e+3,true,false,null,"\u00e9\n"],"assets":null,"totalPages":7}`))
	f.Add([]byte(`{"assets":[{"adamId":"1","totalCount":18446744073709551615}]}`))
	f.Add([]byte(`{"assets":[{"adamid":"1"}],"UID":"x"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		equalPages(t, body)
	})
}

// BenchmarkDecodePage compares the fast path with segmentio on a page of
// 500 assets as the fake Apple writes it.
func BenchmarkDecodePage(b *testing.B) {
	body := assetPage(b, 500)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, ok := decodePageFast(body); !ok {
				b.Fatal("fell back")
			}
		}
	})
	b.Run("segmentio", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			if _, err := reference(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

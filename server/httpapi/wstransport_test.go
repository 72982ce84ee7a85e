package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
)

// envelope writes what json.Marshal of a wsEnvelope would.
func TestEnvelopeMatchesJSONMarshal(t *testing.T) {
	for _, m := range []wsEnvelope{
		{ID: "1", Type: "next", Payload: json.RawMessage(`{"data":{"a":1}}`)},
		{ID: `we"ird\</script>` + "\u2028é\x01", Type: "error", Payload: json.RawMessage(`[{"message":"x"}]`)},
		{ID: "7", Type: "complete"},
	} {
		want, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		got := envelope(m.ID, m.Type, m.Payload)
		if !json.Valid(got) {
			t.Fatalf("envelope(%q) = %s: not JSON", m.ID, got)
		}
		var back wsEnvelope
		if err := json.Unmarshal(got, &back); err != nil || back.ID != m.ID || back.Type != m.Type || !bytes.Equal(back.Payload, m.Payload) {
			t.Fatalf("envelope(%q) = %s, decodes to %+v; want %s", m.ID, got, back, want)
		}
	}
}

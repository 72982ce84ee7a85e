package apple_test

import (
	"encoding/json"
	"testing"

	"github.com/orchard-msp/orchard/modules/apple"
)

// Bodies shaped as Apple documents them (subscribing-to-notifications) and
// as Zentral's preprocessor reads ASSET_MANAGEMENT.
const (
	assetManagementBody = `{"notification":{"assignments":[{"adamId":"408709785","pricingParam":"STDQ","serialNumber":"C02XK1"},
	  {"adamId":"408709785","pricingParam":"STDQ","clientUserId":"client-4"}],"eventId":"954910a8-1a7d-4c5b-9a6d-0ab8e2b4d7c1",
	  "result":"FAILURE","type":"ASSOCIATE","error":{"errorNumber":9709,"errorMessage":"Not enough assets available."}},
	  "notificationId":"2b1a4f0e-1111-4c1d-9b0a-0f3c5d6e7f80","notificationType":"ASSET_MANAGEMENT","uId":"2049025000431439"}`
	assetCountBody = `{"notification":{"adamId":"408709785","countDelta":-2,"pricingParam":"PLUS"},
	  "notificationId":"n-2","notificationType":"ASSET_COUNT","uId":"2049025000431439"}`
	testBody = `{"notification":{},"notificationId":"n-3","notificationType":"TEST_NOTIFICATION","uId":"2049025000431439"}`
)

func TestParseNotification(t *testing.T) {
	n, err := apple.ParseNotification([]byte(assetManagementBody))
	if err != nil {
		t.Fatal(err)
	}
	am := n.AssetManagement
	if n.Type != apple.NotifyAssetManagement || n.LocationUID != "2049025000431439" || n.ID == "" || am == nil {
		t.Fatalf("envelope %+v", n)
	}
	if am.EventID != "954910a8-1a7d-4c5b-9a6d-0ab8e2b4d7c1" || am.Type != apple.EventAssociate || am.Result != apple.ResultFailure ||
		am.Error == nil || am.Error.Number != 9709 || len(am.Assignments) != 2 ||
		am.Assignments[0].SerialNumber != "C02XK1" || am.Assignments[1].ClientUserID != "client-4" {
		t.Fatalf("payload %+v", am)
	}

	n, err = apple.ParseNotification([]byte(assetCountBody))
	if err != nil || n.AssetCount == nil || *n.AssetCount != (apple.AssetCount{AdamID: "408709785", PricingParam: "PLUS", CountDelta: -2}) {
		t.Fatalf("asset count %+v, %v", n, err)
	}
	n, err = apple.ParseNotification([]byte(testBody))
	if err != nil || n.Type != apple.NotifyTest || n.AssetCount != nil || n.AssetManagement != nil {
		t.Fatalf("test notification %+v, %v", n, err)
	}

	for name, bad := range map[string]string{
		"NotJSON":          `{"notification":`,
		"NoType":           `{"notification":{},"notificationId":"x"}`,
		"AssetMgmtNoEvent": `{"notification":{"result":"SUCCESS"},"notificationType":"ASSET_MANAGEMENT"}`,
		"AssetCountNoAdam": `{"notification":{"countDelta":1},"notificationType":"ASSET_COUNT"}`,
	} {
		if _, err := apple.ParseNotification([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}

// What the fakes send with MarshalJSON reads back the same.
func TestNotificationRoundTrip(t *testing.T) {
	in, _ := apple.ParseNotification([]byte(assetManagementBody))
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := apple.ParseNotification(b)
	if err != nil {
		t.Fatal(err)
	}
	if out.ID != in.ID || out.AssetManagement.EventID != in.AssetManagement.EventID || len(out.AssetManagement.Assignments) != 2 ||
		out.AssetManagement.Error.Number != 9709 || out.AssetManagement.Assignments[1] != in.AssetManagement.Assignments[1] {
		t.Fatalf("round trip changed it: %s", b)
	}
}

func TestNotificationAuthorized(t *testing.T) {
	for header, want := range map[string]bool{
		"Bearer s3cret": true, "Bearer s3cre": false, "bearer s3cret": false, "s3cret": false, "": false, "Bearer ": false,
	} {
		if got := apple.NotificationAuthorized(header, "s3cret"); got != want {
			t.Errorf("%q: %v, want %v", header, got, want)
		}
	}
	if apple.NotificationAuthorized("Bearer ", "") {
		t.Error("an empty secret authorizes nothing")
	}
}

func TestLimitsFrom(t *testing.T) {
	got := apple.LimitsFrom(map[string]int{"maxSerialNumbers": 10, "maxAssets": 0})
	if got.MaxSerialNumbers != 10 || got.MaxAssets != apple.DefaultLimits.MaxAssets || got.MaxRevokeSerialNumbers != 100 {
		t.Fatalf("limits %+v", got)
	}
}

// Package schematype holds the small value types that ent fields store as JSON.
// It imports nothing from ent so the schema, the generated code and the
// GraphQL layer can all share it.
package schematype

// MDMInfo is Apple's mdmInfo object: which device management service holds a
// location. All three fields are required when Orchard writes it (Apple error 9723).
type MDMInfo struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Metadata string `json:"metadata"`
}

// LicenceFailure is one asset × device or asset × user pair a licence
// operation could not do, with the reason and what to do about it. For a
// revoke, AdamID and PricingParam are empty: the pair is the device or user.
type LicenceFailure struct {
	AdamID       *string `json:"adamID,omitempty"`
	PricingParam *string `json:"pricingParam,omitempty"`
	SerialNumber *string `json:"serialNumber,omitempty"`
	ClientUserID *string `json:"clientUserID,omitempty"`
	// Code is Apple's errorNumber as text ("9709") or an Orchard code.
	Code    string `json:"code"`
	Message string `json:"message"`
}

// AssetRef names an asset the way Apple does: adamId and pricingParam.
type AssetRef struct {
	AdamID       string `json:"adamID"`
	PricingParam string `json:"pricingParam"`
}

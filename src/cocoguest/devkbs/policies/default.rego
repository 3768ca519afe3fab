# Trustee's default resource policy (kbs-protocol.md §11.1): release through the resource plugin to any
# attested TEE except the sample TEE (whose evidence proves nothing).
package policy

import rego.v1

default allow := false

allow if {
	data.plugin == "resource"
	not input.submods.cpu0["ear.veraison.annotated-evidence"].sample
}

# From Trustee (github.com/confidential-containers/trustee, Apache-2.0), kbs/sample_policies/allow_all.rego at
# commit 78962cd416dc, unchanged below this header. tests/unit/test_devkbs_trustee_parity.py checks that
# the text after the first blank line is byte-identical to the recorded upstream copy.

package policy

default allow = false

plugin = data.plugin

allow if {
	plugin == "resource"
}


# From Trustee (github.com/confidential-containers/trustee, Apache-2.0), kbs/sample_policies/affirming.rego at
# commit 78962cd416dc, unchanged below this header. tests/unit/test_devkbs_trustee_parity.py checks that
# the text after the first blank line is byte-identical to the recorded upstream copy.

package policy
import rego.v1

default allow = false

allow if {
    not any_not_affirming
    count(input.submods) > 0
}

any_not_affirming if {
    some _, submod in input.submods
    submod["ear.status"] != "affirming"
}

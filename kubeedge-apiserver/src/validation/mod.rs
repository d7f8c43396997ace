//! Strictness: what kube-apiserver refuses, refused here with its status and message.
//!
//! | Rule | Status, message | Upstream source |
//! | --- | --- | --- |
//! | `metav1.Time` fields (`metadata.creationTimestamp`, `deletionTimestamp`, `managedFields[].time`, condition times, pod start/finish times, Event `firstTimestamp`/`lastTimestamp`) decode with Go's `time.Parse(time.RFC3339)`: fractions accepted and dropped, stored as `2006-01-02T15:04:05Z` | 400 BadRequest, `<Kind> in version "<v>" cannot be handled as a <Kind>: parsing time "<s>" as "2006-01-02T15:04:05Z07:00": cannot parse "<rest>" as "<elem>"` (or `…: month out of range`, `…: extra text: "…"`) | `staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/time.go`, `apiserver/pkg/endpoints/handlers/rest.go` (`transformDecodeError`) |
//! | `metav1.MicroTime` fields (Lease `spec.renewTime`/`spec.acquireTime`, Event `eventTime`, `series.lastObservedTime`) need exactly six fractional digits | 400, as above with layout `2006-01-02T15:04:05.000000Z07:00` (e.g. `cannot parse "789Z" as "Z07:00"` for nanoseconds, `cannot parse "Z" as ".000000"` for none) | `staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/micro_time.go` |
//! | a time that is not a JSON string | 400, `… cannot be handled as a <Kind>: json: cannot unmarshal number into Go value of type string` | `time.go` (`UnmarshalJSON`) |
//! | unknown and duplicate fields under `fieldValidation=Strict` | 400, `<Kind> in version "<v>" cannot be handled as a <Kind>: strict decoding error: unknown field "spec.x", duplicate field "metadata.name"` | `apiserver/pkg/endpoints/handlers/create.go`, `update.go`; `apimachinery/pkg/runtime/serializer/json/json.go` |
//! | the same under `Warn` (the default when the parameter is absent) | accepted, one `Warning: 299 - "unknown field \"spec.x\""` header each, the field dropped | `handlers/rest.go` (`fieldValidation`, `addStrictDecodingWarnings`), `apimachinery/pkg/util/net/http.go` (`NewWarningHeader`) |
//! | the same under `Ignore` | accepted silently, the field dropped | `handlers/create.go` |
//! | any other `fieldValidation` value | 422 Invalid, `CreateOptions.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "x": supported values: "", "Ignore", "Strict", "Warn"` (`UpdateOptions`, `PatchOptions` likewise) | `apimachinery/pkg/apis/meta/v1/validation/validation.go` |
//! | PUT without `metadata.resourceVersion` for Lease, CustomResourceDefinition and custom resources (`AllowUnconditionalUpdate` false) | 422, `leases.coordination.k8s.io "<name>" is invalid: metadata.resourceVersion: Invalid value: 0: must be specified for an update` | `apiserver/pkg/registry/generic/registry/store.go`, `pkg/registry/coordination/lease/strategy.go`, `apiextensions-apiserver/pkg/registry/customresource/strategy.go` |
//! | PUT with a stale `metadata.resourceVersion` (every kind) | 409 Conflict, `Operation cannot be fulfilled on <resource> "<name>": the object has been modified; please apply your changes to the latest version and try again` | `store.go` |
//! | changing `metadata.uid` on update | 422, `<Kind> "<name>" is invalid: metadata.uid: Invalid value: "<uid>": field is immutable` | `apimachinery/pkg/api/validation/objectmeta.go` (`ValidateObjectMetaUpdate`), `apiserver/pkg/registry/rest/update.go` |
//! | a pod's spec beyond `containers[*].image`, `initContainers[*].image`, `activeDeadlineSeconds`, added `tolerations`, removed `schedulingGates`, `terminationGracePeriodSeconds` negative→1 (so `nodeName` too: use `pods/binding`) | 422, `Pod "<name>" is invalid: spec: Forbidden: pod updates may not change fields other than …` then a diff (upstream's diff is Go's; ours lists the changed `spec.*` fields) | `pkg/apis/core/validation/validation.go` (`ValidatePodUpdate`), `pkg/registry/core/pod/strategy.go` |
//! | apps/v1 Deployment, ReplicaSet, DaemonSet `spec.selector` | 422, `Deployment.apps "<name>" is invalid: spec.selector: Invalid value: {"matchLabels":{…}}: field is immutable` | `pkg/apis/apps/validation/validation.go`, `pkg/registry/apps/deployment/strategy.go` |
//! | a Service's allocated `spec.clusterIP`/`clusterIPs` (an empty one on update keeps the allocated one) | 422, `Service "<name>" is invalid: spec.clusterIPs[0]: Invalid value: ["…"]: may not change once set` | `pkg/apis/core/validation/validation.go` (`validateUpgradeDowngradeClusterIPs`), `pkg/registry/core/service/storage/storage.go` |
//! | names: DNS-1123 subdomain (most kinds), DNS-1123 label (Namespace), DNS-1035 label (Service: a letter first) | 422, `<Kind> "<name>" is invalid: metadata.name: Invalid value: "<name>": a lowercase RFC 1123 subdomain must consist of … (e.g. 'example.com', regex used for validation is '…')` (and `must be no more than 253 characters`) | `staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go`, `apimachinery/pkg/util/validation/validation.go`, `pkg/apis/core/validation/validation.go` (`ValidateServiceName`) |
//! | required fields: pod `spec.containers` with `name` and `image`; workload `spec.selector` matching `spec.template.metadata.labels`; Service `spec.ports` with a valid `port` | 422, `<Kind> "<name>" is invalid: spec.containers: Required value` (and so on) | `pkg/apis/core/validation/validation.go`, `pkg/apis/apps/validation/validation.go` |
//! | several field errors at once | 422, the causes joined as `[a, b]` | `apimachinery/pkg/util/errors/errors.go` (`aggregate.Error`) |
//!
//! Patches: the patched object is checked as a PUT body would be; a bad time answers 422
//! `"" is invalid: patch: Invalid value: "<patched object>": parsing time …` as upstream's patch
//! handler does (`apiserver/pkg/endpoints/handlers/patch.go`). Known differences: unknown
//! fields in a patch under Strict answer the 400 strict-decoding message (upstream: the same
//! 422 form), duplicate keys in a patch body are reported like a PUT body's, and the strict
//! findings are listed duplicates first rather than in document order. Protobuf bodies skip
//! the time checks (protobuf carries times as seconds and nanoseconds).

mod decode;
mod gotime;
mod times;
mod update;

pub(crate) use decode::{apply_directive, cannot_handle, check_object, parse_json};
pub use decode::{decode_json_object, DecodeError, Decoded, FieldValidation};
pub(crate) use update::{
    allows_unconditional_update, missing_resource_version, uid_causes, update_causes,
};

/// Decodes the Time and MicroTime fields of a built-in `kind` in place (see the table).
pub(crate) fn normalize_times(kind: &str, obj: &mut serde_json::Value) -> Result<(), String> {
    times::normalize(kind, obj)
}

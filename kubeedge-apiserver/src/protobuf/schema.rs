//! The field tables: for each protobuf message kubectl may send, field number → JSON name and
//! type, from the published `generated.proto` schemas.

use Kind::*;

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Str,
    /// A non-pointer integer: zero is Go's "unset" and is left out, as JSON's omitempty does.
    Int,
    /// A pointer integer (`*int32`): present means set, zero included.
    OptInt,
    Bool,
    Msg(&'static Msg),
    RepStr,
    RepMsg(&'static Msg),
    MapStr,
    MapBytes,
    MapQuantity,
    Time,
    IntOrStr,
}

pub(super) struct Msg {
    pub(super) name: &'static str,
    pub(super) fields: &'static [(u32, &'static str, Kind)],
}

macro_rules! msg {
    ($id:ident, $name:literal, [$( ($n:literal, $json:literal, $kind:expr) ),* $(,)?]) => {
        static $id: Msg = Msg { name: $name, fields: &[ $( ($n, $json, $kind) ),* ] };
    };
}

msg!(
    OBJECT_META,
    "ObjectMeta",
    [
        (1, "name", Str),
        (2, "generateName", Str),
        (3, "namespace", Str),
        (5, "uid", Str),
        (6, "resourceVersion", Str),
        (7, "generation", Int),
        (8, "creationTimestamp", Time),
        (9, "deletionTimestamp", Time),
        (10, "deletionGracePeriodSeconds", OptInt),
        (11, "labels", MapStr),
        (12, "annotations", MapStr),
        (13, "ownerReferences", RepMsg(&OWNER_REFERENCE)),
        (14, "finalizers", RepStr),
    ]
);
msg!(
    OWNER_REFERENCE,
    "OwnerReference",
    [
        (1, "kind", Str),
        (3, "name", Str),
        (4, "uid", Str),
        (5, "apiVersion", Str),
        (6, "controller", Bool),
        (7, "blockOwnerDeletion", Bool),
    ]
);
msg!(
    LABEL_SELECTOR,
    "LabelSelector",
    [
        (1, "matchLabels", MapStr),
        (2, "matchExpressions", RepMsg(&LABEL_SELECTOR_REQ))
    ]
);
msg!(
    LABEL_SELECTOR_REQ,
    "LabelSelectorRequirement",
    [(1, "key", Str), (2, "operator", Str), (3, "values", RepStr)]
);
msg!(EMPTY, "status", []);
msg!(
    NAMESPACE,
    "Namespace",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&NAMESPACE_SPEC)),
        (3, "status", Msg(&EMPTY))
    ]
);
msg!(NAMESPACE_SPEC, "NamespaceSpec", [(1, "finalizers", RepStr)]);
msg!(
    CONFIG_MAP,
    "ConfigMap",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "data", MapStr),
        (3, "binaryData", MapBytes),
        (4, "immutable", Bool)
    ]
);
msg!(
    SECRET,
    "Secret",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "data", MapBytes),
        (3, "type", Str),
        (4, "stringData", MapStr),
        (5, "immutable", Bool),
    ]
);
msg!(
    LOCAL_OBJECT_REFERENCE,
    "LocalObjectReference",
    [(1, "name", Str)]
);
msg!(
    OBJECT_REFERENCE,
    "ObjectReference",
    [
        (1, "kind", Str),
        (2, "namespace", Str),
        (3, "name", Str),
        (4, "uid", Str),
        (5, "apiVersion", Str),
        (6, "resourceVersion", Str),
        (7, "fieldPath", Str),
    ]
);
msg!(
    SERVICE_ACCOUNT,
    "ServiceAccount",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "secrets", RepMsg(&OBJECT_REFERENCE)),
        (3, "imagePullSecrets", RepMsg(&LOCAL_OBJECT_REFERENCE)),
        (4, "automountServiceAccountToken", Bool),
    ]
);
msg!(
    SERVICE,
    "Service",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&SERVICE_SPEC)),
        (3, "status", Msg(&EMPTY))
    ]
);
msg!(
    SERVICE_SPEC,
    "ServiceSpec",
    [
        (1, "ports", RepMsg(&SERVICE_PORT)),
        (2, "selector", MapStr),
        (3, "clusterIP", Str),
        (4, "type", Str),
        (5, "externalIPs", RepStr),
        (7, "sessionAffinity", Str),
        (10, "externalName", Str),
        (11, "externalTrafficPolicy", Str),
        (18, "clusterIPs", RepStr),
        (19, "ipFamilies", RepStr),
        (17, "ipFamilyPolicy", Str),
        (22, "internalTrafficPolicy", Str),
    ]
);
msg!(
    SERVICE_PORT,
    "ServicePort",
    [
        (1, "name", Str),
        (2, "protocol", Str),
        (3, "port", Int),
        (4, "targetPort", IntOrStr),
        (5, "nodePort", Int),
        (6, "appProtocol", Str),
    ]
);
msg!(
    DEPLOYMENT,
    "Deployment",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&DEPLOYMENT_SPEC)),
        (3, "status", Msg(&EMPTY))
    ]
);
msg!(
    DEPLOYMENT_SPEC,
    "DeploymentSpec",
    [
        (1, "replicas", OptInt),
        (2, "selector", Msg(&LABEL_SELECTOR)),
        (3, "template", Msg(&POD_TEMPLATE_SPEC)),
        (4, "strategy", Msg(&DEPLOYMENT_STRATEGY)),
        (5, "minReadySeconds", Int),
        (6, "revisionHistoryLimit", OptInt),
        (7, "paused", Bool),
        (9, "progressDeadlineSeconds", OptInt),
    ]
);
msg!(
    DEPLOYMENT_STRATEGY,
    "DeploymentStrategy",
    [(1, "type", Str), (2, "rollingUpdate", Msg(&ROLLING_UPDATE))]
);
msg!(
    ROLLING_UPDATE,
    "RollingUpdateDeployment",
    [(1, "maxUnavailable", IntOrStr), (2, "maxSurge", IntOrStr)]
);
msg!(
    POD_TEMPLATE_SPEC,
    "PodTemplateSpec",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&POD_SPEC))
    ]
);
msg!(
    POD_SPEC,
    "PodSpec",
    [
        (2, "containers", RepMsg(&CONTAINER)),
        (20, "initContainers", RepMsg(&CONTAINER)),
        (3, "restartPolicy", Str),
        (4, "terminationGracePeriodSeconds", OptInt),
        (6, "dnsPolicy", Str),
        (7, "nodeSelector", MapStr),
        (8, "serviceAccountName", Str),
        (10, "nodeName", Str),
        (11, "hostNetwork", Bool),
        (15, "imagePullSecrets", RepMsg(&LOCAL_OBJECT_REFERENCE)),
        (19, "schedulerName", Str),
    ]
);
msg!(
    CONTAINER,
    "Container",
    [
        (1, "name", Str),
        (2, "image", Str),
        (3, "command", RepStr),
        (4, "args", RepStr),
        (5, "workingDir", Str),
        (6, "ports", RepMsg(&CONTAINER_PORT)),
        (7, "env", RepMsg(&ENV_VAR)),
        (8, "resources", Msg(&RESOURCES)),
        (13, "terminationMessagePath", Str),
        (14, "imagePullPolicy", Str),
        (16, "stdin", Bool),
        (17, "stdinOnce", Bool),
        (18, "tty", Bool),
        (20, "terminationMessagePolicy", Str),
    ]
);
msg!(
    CONTAINER_PORT,
    "ContainerPort",
    [
        (1, "name", Str),
        (2, "hostPort", Int),
        (3, "containerPort", Int),
        (4, "protocol", Str),
        (5, "hostIP", Str),
    ]
);
msg!(ENV_VAR, "EnvVar", [(1, "name", Str), (2, "value", Str)]);
msg!(
    RESOURCES,
    "ResourceRequirements",
    [(1, "limits", MapQuantity), (2, "requests", MapQuantity)]
);

msg!(
    POLICY_RULE,
    "PolicyRule",
    [
        (1, "verbs", RepStr),
        (2, "apiGroups", RepStr),
        (3, "resources", RepStr),
        (4, "resourceNames", RepStr),
        (5, "nonResourceURLs", RepStr),
    ]
);
msg!(
    ROLE,
    "Role",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "rules", RepMsg(&POLICY_RULE)),
    ]
);
msg!(
    CLUSTER_ROLE,
    "ClusterRole",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "rules", RepMsg(&POLICY_RULE)),
        (3, "aggregationRule", Msg(&AGGREGATION_RULE)),
    ]
);
msg!(
    AGGREGATION_RULE,
    "AggregationRule",
    [(1, "clusterRoleSelectors", RepMsg(&LABEL_SELECTOR))]
);
msg!(
    SUBJECT,
    "Subject",
    [
        (1, "kind", Str),
        (2, "apiGroup", Str),
        (3, "name", Str),
        (4, "namespace", Str),
    ]
);
msg!(
    ROLE_REF,
    "RoleRef",
    [(1, "apiGroup", Str), (2, "kind", Str), (3, "name", Str)]
);
msg!(
    ROLE_BINDING,
    "RoleBinding",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "subjects", RepMsg(&SUBJECT)),
        (3, "roleRef", Msg(&ROLE_REF)),
    ]
);
msg!(
    RESOURCE_ATTRIBUTES,
    "ResourceAttributes",
    [
        (1, "namespace", Str),
        (2, "verb", Str),
        (3, "group", Str),
        (4, "version", Str),
        (5, "resource", Str),
        (6, "subresource", Str),
        (7, "name", Str),
    ]
);
msg!(
    NON_RESOURCE_ATTRIBUTES,
    "NonResourceAttributes",
    [(1, "path", Str), (2, "verb", Str)]
);
msg!(
    ACCESS_REVIEW_SPEC,
    "SubjectAccessReviewSpec",
    [
        (1, "resourceAttributes", Msg(&RESOURCE_ATTRIBUTES)),
        (2, "nonResourceAttributes", Msg(&NON_RESOURCE_ATTRIBUTES)),
        (3, "user", Str),
        (4, "groups", RepStr),
        (6, "uid", Str),
    ]
);
msg!(
    ACCESS_REVIEW,
    "SubjectAccessReview",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&ACCESS_REVIEW_SPEC)),
        (3, "status", Msg(&ACCESS_REVIEW_STATUS)),
    ]
);
msg!(
    RULES_REVIEW_SPEC,
    "SelfSubjectRulesReviewSpec",
    [(1, "namespace", Str)]
);
msg!(
    RULES_REVIEW,
    "SelfSubjectRulesReview",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&RULES_REVIEW_SPEC)),
        (3, "status", Msg(&RULES_REVIEW_STATUS)),
    ]
);
msg!(
    SELF_REVIEW,
    "SelfSubjectReview",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "status", Msg(&SELF_REVIEW_STATUS))
    ]
);
// Review statuses are the server's answer; clients send them empty, with Go's zero values.
msg!(
    ACCESS_REVIEW_STATUS,
    "SubjectAccessReviewStatus",
    [
        (1, "allowed", Bool),
        (2, "reason", Str),
        (3, "evaluationError", Str),
        (4, "denied", Bool),
    ]
);
msg!(
    RULES_REVIEW_STATUS,
    "SubjectRulesReviewStatus",
    [(3, "incomplete", Bool), (4, "evaluationError", Str)]
);
msg!(
    SELF_REVIEW_STATUS,
    "SelfSubjectReviewStatus",
    [(1, "userInfo", Msg(&USER_INFO))]
);
msg!(
    USER_INFO,
    "UserInfo",
    [(1, "username", Str), (2, "uid", Str), (3, "groups", RepStr)]
);

msg!(
    TOKEN_REQUEST,
    "TokenRequest",
    [
        (1, "metadata", Msg(&OBJECT_META)),
        (2, "spec", Msg(&TOKEN_REQUEST_SPEC)),
        (3, "status", Msg(&TOKEN_REQUEST_STATUS)),
    ]
);
msg!(
    TOKEN_REQUEST_SPEC,
    "TokenRequestSpec",
    [
        (1, "audiences", RepStr),
        (3, "boundObjectRef", Msg(&BOUND_OBJECT_REF)),
        (4, "expirationSeconds", OptInt),
    ]
);
msg!(
    BOUND_OBJECT_REF,
    "BoundObjectReference",
    [
        (1, "kind", Str),
        (2, "apiVersion", Str),
        (3, "name", Str),
        (4, "uid", Str),
    ]
);
msg!(
    TOKEN_REQUEST_STATUS,
    "TokenRequestStatus",
    [(1, "token", Str), (2, "expirationTimestamp", Time)]
);

/// The object types a protobuf body may carry.
pub(super) fn schema(api_version: &str, kind: &str) -> Option<&'static Msg> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => &NAMESPACE,
        ("v1", "ConfigMap") => &CONFIG_MAP,
        ("v1", "Secret") => &SECRET,
        ("v1", "ServiceAccount") => &SERVICE_ACCOUNT,
        ("v1", "Service") => &SERVICE,
        ("apps/v1", "Deployment") => &DEPLOYMENT,
        ("rbac.authorization.k8s.io/v1", "Role") => &ROLE,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => &CLUSTER_ROLE,
        ("rbac.authorization.k8s.io/v1", "RoleBinding" | "ClusterRoleBinding") => &ROLE_BINDING,
        (
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview" | "SubjectAccessReview" | "LocalSubjectAccessReview",
        ) => &ACCESS_REVIEW,
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => &RULES_REVIEW,
        ("authentication.k8s.io/v1", "SelfSubjectReview") => &SELF_REVIEW,
        ("authentication.k8s.io/v1", "TokenRequest") => &TOKEN_REQUEST,
        _ => return None,
    })
}

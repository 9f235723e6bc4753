//! The fields of the kubeadm.k8s.io/v1beta4 kinds rpool uses (kubeadm
//! v1.31 to v1.33), with their types, for [`super::kubeadm_check`].
//! Written from the v1beta4 reference: InitConfiguration,
//! ClusterConfiguration, JoinConfiguration and the types they hold.

/// A kind's fields and their types.
pub(super) type Schema = &'static [(&'static str, T)];

/// A field's type.
pub(super) enum T {
    Str,
    Int,
    Bool,
    /// Anything (values kubeadm passes through, e.g. an env var source).
    Any,
    List(&'static T),
    Obj(&'static [(&'static str, T)]),
    /// A map of string keys to values of one type.
    Map(&'static T),
}

const ARG: T = T::Obj(&[("name", T::Str), ("value", T::Str)]);
const ENV: T = T::Obj(&[("name", T::Str), ("value", T::Str), ("valueFrom", T::Any)]);
const HOST_PATH_MOUNT: T = T::Obj(&[
    ("name", T::Str),
    ("hostPath", T::Str),
    ("mountPath", T::Str),
    ("readOnly", T::Bool),
    ("pathType", T::Str),
]);
const TAINT: T = T::Obj(&[
    ("key", T::Str),
    ("value", T::Str),
    ("effect", T::Str),
    ("timeAdded", T::Str),
]);
const NODE_REGISTRATION: T = T::Obj(&[
    ("name", T::Str),
    ("criSocket", T::Str),
    ("taints", T::List(&TAINT)),
    ("kubeletExtraArgs", T::List(&ARG)),
    ("ignorePreflightErrors", T::List(&T::Str)),
    ("imagePullPolicy", T::Str),
    ("imagePullSerial", T::Bool),
]);
const API_ENDPOINT: T = T::Obj(&[("advertiseAddress", T::Str), ("bindPort", T::Int)]);
const PATCHES: T = T::Obj(&[("directory", T::Str)]);
const TIMEOUTS: T = T::Obj(&[
    ("controlPlaneComponentHealthCheck", T::Str),
    ("kubeletHealthCheck", T::Str),
    ("kubernetesAPICall", T::Str),
    ("etcdAPICall", T::Str),
    ("tlsBootstrap", T::Str),
    ("discovery", T::Str),
    ("upgradeManifests", T::Str),
]);
const BOOTSTRAP_TOKEN: T = T::Obj(&[
    ("token", T::Str),
    ("description", T::Str),
    ("ttl", T::Str),
    ("expires", T::Str),
    ("usages", T::List(&T::Str)),
    ("groups", T::List(&T::Str)),
]);
const COMPONENT: T = T::Obj(&[
    ("extraArgs", T::List(&ARG)),
    ("extraVolumes", T::List(&HOST_PATH_MOUNT)),
    ("extraEnvs", T::List(&ENV)),
]);

pub(super) const INIT: Schema = &[
    ("apiVersion", T::Str),
    ("kind", T::Str),
    ("bootstrapTokens", T::List(&BOOTSTRAP_TOKEN)),
    ("dryRun", T::Bool),
    ("nodeRegistration", NODE_REGISTRATION),
    ("localAPIEndpoint", API_ENDPOINT),
    ("certificateKey", T::Str),
    ("skipPhases", T::List(&T::Str)),
    ("patches", PATCHES),
    ("timeouts", TIMEOUTS),
];

pub(super) const CLUSTER: Schema = &[
    ("apiVersion", T::Str),
    ("kind", T::Str),
    (
        "etcd",
        T::Obj(&[
            (
                "local",
                T::Obj(&[
                    ("imageRepository", T::Str),
                    ("imageTag", T::Str),
                    ("dataDir", T::Str),
                    ("extraArgs", T::List(&ARG)),
                    ("extraEnvs", T::List(&ENV)),
                    ("serverCertSANs", T::List(&T::Str)),
                    ("peerCertSANs", T::List(&T::Str)),
                ]),
            ),
            (
                "external",
                T::Obj(&[
                    ("endpoints", T::List(&T::Str)),
                    ("caFile", T::Str),
                    ("certFile", T::Str),
                    ("keyFile", T::Str),
                ]),
            ),
        ]),
    ),
    (
        "networking",
        T::Obj(&[
            ("serviceSubnet", T::Str),
            ("podSubnet", T::Str),
            ("dnsDomain", T::Str),
        ]),
    ),
    ("kubernetesVersion", T::Str),
    ("controlPlaneEndpoint", T::Str),
    (
        "apiServer",
        T::Obj(&[
            ("extraArgs", T::List(&ARG)),
            ("extraVolumes", T::List(&HOST_PATH_MOUNT)),
            ("extraEnvs", T::List(&ENV)),
            ("certSANs", T::List(&T::Str)),
        ]),
    ),
    ("controllerManager", COMPONENT),
    ("scheduler", COMPONENT),
    (
        "dns",
        T::Obj(&[
            ("imageRepository", T::Str),
            ("imageTag", T::Str),
            ("disabled", T::Bool),
        ]),
    ),
    ("proxy", T::Obj(&[("disabled", T::Bool)])),
    ("certificatesDir", T::Str),
    ("imageRepository", T::Str),
    ("featureGates", T::Map(&T::Bool)),
    ("clusterName", T::Str),
    ("encryptionAlgorithm", T::Str),
    ("certificateValidityPeriod", T::Str),
    ("caCertificateValidityPeriod", T::Str),
];

pub(super) const JOIN: Schema = &[
    ("apiVersion", T::Str),
    ("kind", T::Str),
    ("dryRun", T::Bool),
    ("nodeRegistration", NODE_REGISTRATION),
    ("caCertPath", T::Str),
    (
        "discovery",
        T::Obj(&[
            (
                "bootstrapToken",
                T::Obj(&[
                    ("token", T::Str),
                    ("apiServerEndpoint", T::Str),
                    ("caCertHashes", T::List(&T::Str)),
                    ("unsafeSkipCAVerification", T::Bool),
                ]),
            ),
            ("file", T::Obj(&[("kubeConfigPath", T::Str)])),
            ("tlsBootstrapToken", T::Str),
        ]),
    ),
    (
        "controlPlane",
        T::Obj(&[("localAPIEndpoint", API_ENDPOINT), ("certificateKey", T::Str)]),
    ),
    ("skipPhases", T::List(&T::Str)),
    ("patches", PATCHES),
    ("timeouts", TIMEOUTS),
];

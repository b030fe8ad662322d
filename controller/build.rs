//! `cfg(envtest)` when `KUBEBUILDER_ASSETS` is set, so that the tests against a real
//! kube-apiserver show as ignored, not passed, where there is none.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(envtest)");
    println!("cargo::rerun-if-env-changed=KUBEBUILDER_ASSETS");
    if std::env::var_os("KUBEBUILDER_ASSETS").is_some_and(|assets| !assets.is_empty()) {
        println!("cargo::rustc-cfg=envtest");
    }
}

//! Which Ingresses are ours.
//!
//! See <https://kubernetes.io/docs/concepts/services-networking/ingress/#ingress-class>. In order:
//! 1. `spec.ingressClassName` set: ours when it names an IngressClass whose `spec.controller` is
//!    `--controller-name` (the legacy annotation is then not consulted);
//! 2. else the legacy `kubernetes.io/ingress.class` annotation: ours when it equals
//!    `--ingress-class`;
//! 3. else (no class at all): ours when `--watch-ingress-without-class` is set or one of our
//!    IngressClasses is marked `ingressclass.kubernetes.io/is-default-class: "true"`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use ostium_model::NamespacedName;

use crate::{Diagnostic, ObjectKind, ObjectMap, ObjectRef, Objects, Options, Reason};

const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";

/// The IngressClasses, summed up once per change to one ([`Objects`] keeps it).
#[derive(Debug, Default)]
pub(crate) struct ClassList {
    /// Every IngressClass by name, with its `spec.controller`.
    controllers: BTreeMap<String, Option<String>>,
    /// The controllers of the IngressClasses marked default.
    default_controllers: BTreeSet<String>,
}

/// How an Ingress names its class, and what would make a controller serve it: for the
/// migration report, which lists the Ingresses skipped because of their class.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClassClaim {
    /// The class in words: `ingressClassName nginx (IngressClass of controller k8s.io/ingress-nginx)`,
    /// `annotation kubernetes.io/ingress.class: nginx`, or `none`.
    pub class: String,
    /// The flags that select it (`--ingress-class nginx --controller-name k8s.io/ingress-nginx`),
    /// or what is missing when no flag does.
    pub selected_by: String,
}

/// Which Ingresses are ours, for one set of IngressClasses and options.
pub(crate) struct Classes<'a> {
    list: &'a ClassList,
    options: &'a Options,
    serve_classless: bool,
}

impl ClassList {
    pub(crate) fn new(classes: &ObjectMap<IngressClass>) -> Self {
        let mut list = Self::default();
        for (key, class) in classes {
            let controller = class.spec.as_ref().and_then(|s| s.controller.clone());
            let annotations = class.metadata.annotations.as_ref();
            let is_default =
                annotations.and_then(|a| a.get(DEFAULT_CLASS_ANNOTATION)).is_some_and(|v| v == "true");
            if let Some(controller) = controller.as_ref().filter(|_| is_default) {
                list.default_controllers.insert(controller.clone());
            }
            list.controllers.insert(key.name.to_string(), controller);
        }
        list
    }
}

impl<'a> Classes<'a> {
    pub(crate) fn new(objects: &'a Objects, options: &'a Options) -> Self {
        let list = objects.classes();
        let serve_classless = options.watch_ingress_without_class
            || list.default_controllers.contains(&options.controller_name);
        Self { list, options, serve_classless }
    }

    /// Whether Ingresses that name no class are ours.
    pub(crate) fn serves_classless(&self) -> bool {
        self.serve_classless
    }

    /// Whether we serve this Ingress. An Ingress that names our `--ingress-class` in
    /// `ingressClassName` while no IngressClass of that name exists gets a warning: it is a common
    /// mistake in standalone manifests.
    pub(crate) fn is_ours(
        &self,
        id: &NamespacedName,
        ingress: &Ingress,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> bool {
        if let Some(class) = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
            let controller = self.list.controllers.get(class);
            if class == self.options.ingress_class && controller.is_none() {
                diagnostics.push(Diagnostic::warning(
                    ObjectRef::new(ObjectKind::Ingress, Some(&id.namespace), &id.name),
                    Reason::UnknownIngressClass,
                    format!("ingressClassName `{class}` names no IngressClass; the Ingress is not served"),
                ));
            }
            return controller.is_some_and(|c| c.as_deref() == Some(&*self.options.controller_name));
        }
        let annotations = ingress.metadata.annotations.as_ref();
        if let Some(class) = annotations.and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)) {
            return *class == self.options.ingress_class;
        }
        self.serve_classless
    }

    /// How the Ingress names its class, by the same rules as [`Self::is_ours`].
    pub(crate) fn claim(&self, ingress: &Ingress) -> ClassClaim {
        let ours = &self.options.controller_name;
        if let Some(class) = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref()) {
            return match self.list.controllers.get(class) {
                Some(Some(controller)) => ClassClaim {
                    class: format!("ingressClassName {class} (IngressClass of controller {controller})"),
                    selected_by: format!("--ingress-class {class} --controller-name {controller}"),
                },
                Some(None) => ClassClaim {
                    class: format!("ingressClassName {class} (IngressClass without spec.controller)"),
                    selected_by: format!("IngressClass {class} with spec.controller {ours}"),
                },
                None => ClassClaim {
                    class: format!("ingressClassName {class} (no such IngressClass)"),
                    selected_by: format!("an IngressClass {class} with spec.controller {ours}"),
                },
            };
        }
        let annotations = ingress.metadata.annotations.as_ref();
        if let Some(class) = annotations.and_then(|a| a.get(LEGACY_CLASS_ANNOTATION)) {
            return ClassClaim {
                class: format!("annotation {LEGACY_CLASS_ANNOTATION}: {class}"),
                selected_by: format!("--ingress-class {class}"),
            };
        }
        ClassClaim {
            class: "none".to_owned(),
            selected_by: format!(
                "--watch-ingress-without-class, or an IngressClass of controller {ours} marked {DEFAULT_CLASS_ANNOTATION}"
            ),
        }
    }
}

/// The class an Ingress names: `spec.ingressClassName`, else the legacy annotation.
pub(crate) fn class_name(ingress: &Ingress) -> Option<&str> {
    let spec = ingress.spec.as_ref().and_then(|s| s.ingress_class_name.as_deref());
    spec.or_else(|| ingress.metadata.annotations.as_ref()?.get(LEGACY_CLASS_ANNOTATION).map(String::as_str))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: ostium}\nspec: {controller: ostium.dev/ingress-controller}\n";
    const OURS_DEFAULT: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: ostium\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: ostium.dev/ingress-controller}\n";
    const THEIRS: &str = "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: nginx}\nspec: {controller: k8s.io/ingress-nginx}\n";

    fn ingress(class_name: Option<&str>, annotation: Option<&str>) -> Ingress {
        let mut yaml = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: i\n".to_owned();
        if let Some(a) = annotation {
            yaml += &format!("  annotations: {{kubernetes.io/ingress.class: {a}}}\n");
        }
        yaml += "spec: {}\n";
        let mut ingress: Ingress = serde_norway::from_str(&yaml).unwrap();
        if let Some(c) = class_name {
            ingress.spec.get_or_insert_default().ingress_class_name = Some(c.to_owned());
        }
        ingress
    }

    fn is_ours(classes_yaml: &str, without_class_flag: bool, ingress: &Ingress) -> bool {
        let objects = Objects::from_yaml(classes_yaml).unwrap();
        let options = Options { watch_ingress_without_class: without_class_flag, ..crate::tests::options() };
        let mut diagnostics = Vec::new();
        Classes::new(&objects, &options).is_ours(
            &NamespacedName::new("default", "i"),
            ingress,
            &mut diagnostics,
        )
    }

    #[test]
    fn class_name_must_name_an_ingress_class_of_our_controller() {
        let classes = format!("{OURS}---\n{THEIRS}");
        assert!(is_ours(&classes, false, &ingress(Some("ostium"), None)));
        assert!(!is_ours(&classes, false, &ingress(Some("nginx"), None)));
        assert!(!is_ours(&classes, false, &ingress(Some("missing"), None)));
        assert!(
            !is_ours(THEIRS, true, &ingress(Some("ostium"), None)),
            "no IngressClass object named ostium"
        );
    }

    #[test]
    fn class_name_wins_over_legacy_annotation() {
        let classes = format!("{OURS}---\n{THEIRS}");
        assert!(!is_ours(&classes, false, &ingress(Some("nginx"), Some("ostium"))));
        assert!(is_ours(&classes, false, &ingress(Some("ostium"), Some("nginx"))));
    }

    #[test]
    fn legacy_annotation_must_equal_our_ingress_class() {
        assert!(is_ours(THEIRS, false, &ingress(None, Some("ostium"))));
        assert!(!is_ours(OURS, true, &ingress(None, Some("nginx"))));
    }

    #[test]
    fn classless_ingresses_need_our_default_class_or_the_flag() {
        assert!(!is_ours(OURS, false, &ingress(None, None)));
        assert!(is_ours(OURS_DEFAULT, false, &ingress(None, None)));
        assert!(is_ours(OURS, true, &ingress(None, None)));
        let theirs_default = THEIRS.replace("metadata: {name: nginx}", "metadata:\n  name: nginx\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}");
        assert!(!is_ours(&theirs_default, false, &ingress(None, None)));
    }

    #[test]
    fn a_claim_names_the_flags_that_select_the_ingress() {
        let objects = Objects::from_yaml(THEIRS).unwrap();
        let options = crate::tests::options();
        let classes = Classes::new(&objects, &options);
        let claim = classes.claim(&ingress(Some("nginx"), None));
        assert_eq!(claim.selected_by, "--ingress-class nginx --controller-name k8s.io/ingress-nginx");
        assert_eq!(claim.class, "ingressClassName nginx (IngressClass of controller k8s.io/ingress-nginx)");
        assert_eq!(classes.claim(&ingress(None, Some("nginx"))).selected_by, "--ingress-class nginx");
        assert!(classes.claim(&ingress(None, None)).selected_by.starts_with("--watch-ingress-without-class"));
        let missing = classes.claim(&ingress(Some("other"), None));
        assert_eq!(
            missing.selected_by,
            "an IngressClass other with spec.controller ostium.dev/ingress-controller"
        );
    }

    #[test]
    fn naming_our_class_without_an_ingress_class_object_is_reported() {
        let objects = Objects::default();
        let mut diagnostics = Vec::new();
        let options = crate::tests::options();
        let classes = Classes::new(&objects, &options);
        assert!(!classes.is_ours(
            &NamespacedName::new("default", "i"),
            &ingress(Some("ostium"), None),
            &mut diagnostics
        ));
        assert_eq!(diagnostics.len(), 1);
        assert_eq!(diagnostics[0].reason, Reason::UnknownIngressClass);
    }
}

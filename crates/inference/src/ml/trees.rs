//! Tree ensembles (`TreeEnsembleClassifier`, `TreeEnsembleRegressor`) flattened into one node
//! array walked from each tree's root, so a row costs one root-to-leaf path per tree. Scores
//! accumulate in f64; the semantics (aggregation, base values, post transforms, the binary
//! single-score layout) follow ONNX Runtime, which is what skl2onnx exports are checked against.

use std::sync::Arc;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::tract_hir::internal::*;

use super::attributes;
use super::one_pass::{OnePass, OnePassOp};
use super::scores::{Labels, PostTransform, logistic, output_rules, probit};

type Built = TractResult<(Box<dyn InferenceOp>, Vec<String>)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Leaf,
}

impl Mode {
    fn parse(s: &str) -> TractResult<Self> {
        Ok(match s {
            "BRANCH_LEQ" => Mode::Leq,
            "BRANCH_LT" => Mode::Lt,
            "BRANCH_GTE" => Mode::Gte,
            "BRANCH_GT" => Mode::Gt,
            "BRANCH_EQ" => Mode::Eq,
            "BRANCH_NEQ" => Mode::Neq,
            "LEAF" => Mode::Leaf,
            other => bail!("unknown tree node mode {other}"),
        })
    }
}

/// One node. For a leaf, `true_child..false_child` is its range in the weights.
#[derive(Debug, Clone, Copy)]
struct Node {
    threshold: f32,
    feature: u32,
    true_child: u32,
    false_child: u32,
    mode: Mode,
    missing_goes_true: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// The flattened trees.
#[derive(Debug)]
struct Ensemble {
    nodes: Vec<Node>,
    roots: Vec<u32>,
    /// (target or class index, weight) of each leaf, in leaf order.
    weights: Vec<(u32, f64)>,
    targets: usize,
    aggregate: Aggregate,
    base_values: Vec<f64>,
    post_transform: PostTransform,
    /// Columns read; an input narrower than this is refused.
    width: usize,
    /// Every split is `x <= threshold` with no missing-value routing: the fast walk applies.
    only_leq: bool,
    /// The one class every leaf writes to, if there is one (ONNX's binary layout).
    single_class: Option<u32>,
    /// No negative leaf weight (probabilities rather than margins).
    all_positive: bool,
}

impl Ensemble {
    /// Parses the node and leaf attributes; `leaf` is "class" or "target".
    fn parse(node: &NodeProto, leaf: &str, targets: usize) -> TractResult<Self> {
        let tree_ids = attributes::required_ints(node, "nodes_treeids")?;
        let node_ids = attributes::required_ints(node, "nodes_nodeids")?;
        let features = attributes::required_ints(node, "nodes_featureids")?;
        let true_ids = attributes::required_ints(node, "nodes_truenodeids")?;
        let false_ids = attributes::required_ints(node, "nodes_falsenodeids")?;
        let values = attributes::required_floats(node, "nodes_values")?;
        let modes = attributes::strings(node, "nodes_modes")?
            .ok_or_else(|| format_err!("{}: nodes_modes is missing", node.op_type))?;
        let missing = attributes::ints(node, "nodes_missing_value_tracks_true").unwrap_or(&[]);
        let n = tree_ids.len();
        for (name, len) in [
            ("nodes_nodeids", node_ids.len()),
            ("nodes_featureids", features.len()),
            ("nodes_truenodeids", true_ids.len()),
            ("nodes_falsenodeids", false_ids.len()),
            ("nodes_values", values.len()),
            ("nodes_modes", modes.len()),
        ] {
            if len != n {
                bail!("{}: {name} has {len} entries for {n} nodes", node.op_type);
            }
        }
        if !missing.is_empty() && missing.len() != n {
            bail!(
                "{}: nodes_missing_value_tracks_true has the wrong length",
                node.op_type
            );
        }
        if n == 0 {
            bail!("{}: no nodes", node.op_type);
        }

        let mut index = std::collections::HashMap::with_capacity(n);
        for i in 0..n {
            if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
                bail!(
                    "{}: node {} of tree {} appears twice",
                    node.op_type,
                    node_ids[i],
                    tree_ids[i]
                );
            }
        }
        let child = |tree: i64, id: i64| -> TractResult<u32> {
            index
                .get(&(tree, id))
                .map(|&i| i as u32)
                .ok_or_else(|| format_err!("tree {tree} has no node {id}"))
        };

        // Leaf weights grouped by node.
        let leaf_trees = attributes::required_ints(node, &format!("{leaf}_treeids"))?;
        let leaf_nodes = attributes::required_ints(node, &format!("{leaf}_nodeids"))?;
        let leaf_ids = attributes::required_ints(node, &format!("{leaf}_ids"))?;
        let leaf_weights = attributes::required_floats(node, &format!("{leaf}_weights"))?;
        let m = leaf_trees.len();
        if leaf_nodes.len() != m || leaf_ids.len() != m || leaf_weights.len() != m {
            bail!("{}: the {leaf}_* lists differ in length", node.op_type);
        }
        let mut by_node: Vec<Vec<(u32, f64)>> = vec![Vec::new(); n];
        for j in 0..m {
            let at = child(leaf_trees[j], leaf_nodes[j])?;
            let target = usize::try_from(leaf_ids[j])
                .ok()
                .filter(|&t| t < targets)
                .ok_or_else(|| {
                    format_err!("{}: leaf target {} out of range", node.op_type, leaf_ids[j])
                })?;
            by_node[at as usize].push((target as u32, leaf_weights[j]));
        }

        let mut nodes = Vec::with_capacity(n);
        let mut weights = Vec::with_capacity(m);
        let mut roots = Vec::new();
        let mut seen_trees = std::collections::HashSet::new();
        let mut width = 0;
        for i in 0..n {
            let mode = Mode::parse(&modes[i])?;
            // A tree's root is its first listed node (skl2onnx and every exporter list id 0
            // first); trees are walked in order of first appearance.
            if seen_trees.insert(tree_ids[i]) {
                roots.push(i as u32);
            }
            let node = if mode == Mode::Leaf {
                let start = weights.len() as u32;
                weights.extend_from_slice(&by_node[i]);
                Node {
                    threshold: 0.0,
                    feature: 0,
                    true_child: start,
                    false_child: weights.len() as u32,
                    mode,
                    missing_goes_true: false,
                }
            } else {
                let feature = u32::try_from(features[i])
                    .map_err(|_| format_err!("negative feature id {}", features[i]))?;
                width = width.max(feature as usize + 1);
                Node {
                    threshold: values[i] as f32,
                    feature,
                    true_child: child(tree_ids[i], true_ids[i])?,
                    false_child: child(tree_ids[i], false_ids[i])?,
                    mode,
                    missing_goes_true: missing.get(i).is_some_and(|&v| v != 0),
                }
            };
            nodes.push(node);
        }
        // A root must be the node with id 0 where there is one.
        for root in roots.iter_mut() {
            let tree = tree_ids[*root as usize];
            if let Some(&i) = index.get(&(tree, 0)) {
                *root = i as u32;
            }
        }
        let base_values = attributes::floats(node, "base_values")?.unwrap_or_default();
        let post_transform = PostTransform::parse(attributes::string(node, "post_transform")?)?;
        let aggregate = match attributes::string(node, "aggregate_function")?.as_deref() {
            None | Some("SUM") => Aggregate::Sum,
            Some("AVERAGE") => Aggregate::Average,
            Some("MIN") => Aggregate::Min,
            Some("MAX") => Aggregate::Max,
            Some(other) => bail!("unknown aggregate_function {other}"),
        };
        let only_leq = nodes
            .iter()
            .all(|n| n.mode == Mode::Leaf || (n.mode == Mode::Leq && !n.missing_goes_true));
        let single_class = weights
            .first()
            .map(|w| w.0)
            .filter(|&first| weights.iter().all(|w| w.0 == first));
        let all_positive = weights.iter().all(|w| w.1 >= 0.0);
        let ensemble = Ensemble {
            nodes,
            roots,
            weights,
            only_leq,
            single_class,
            all_positive,
            targets,
            aggregate,
            base_values,
            post_transform,
            width,
        };
        ensemble.check_acyclic()?;
        Ok(ensemble)
    }

    /// Refuses graphs whose walk would not end (a child pointing back up).
    fn check_acyclic(&self) -> TractResult<()> {
        for &root in &self.roots {
            let mut stack = vec![(root, 0usize)];
            while let Some((at, depth)) = stack.pop() {
                if depth > self.nodes.len() {
                    bail!("a tree has a cycle");
                }
                let node = self.nodes[at as usize];
                if node.mode != Mode::Leaf {
                    stack.push((node.true_child, depth + 1));
                    stack.push((node.false_child, depth + 1));
                }
            }
        }
        Ok(())
    }

    /// The leaf one tree sends `row` to.
    #[inline]
    fn leaf(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        loop {
            let next = match node.mode {
                Mode::Leaf => return node,
                mode => {
                    let v = row[node.feature as usize];
                    let t = node.threshold;
                    let pass = match mode {
                        Mode::Leq => v <= t,
                        Mode::Lt => v < t,
                        Mode::Gte => v >= t,
                        Mode::Gt => v > t,
                        Mode::Eq => v == t,
                        Mode::Neq => v != t,
                        Mode::Leaf => unreachable!("handled above"),
                    };
                    if pass || (node.missing_goes_true && v.is_nan()) {
                        node.true_child
                    } else {
                        node.false_child
                    }
                }
            };
            node = &self.nodes[next as usize];
        }
    }

    /// The leaf one tree sends `row` to, when every split is `<=` (most exports).
    #[inline]
    fn leaf_leq(&self, root: u32, row: &[f32]) -> &Node {
        let mut node = &self.nodes[root as usize];
        while node.mode != Mode::Leaf {
            let next = if row[node.feature as usize] <= node.threshold {
                node.true_child
            } else {
                node.false_child
            };
            node = &self.nodes[next as usize];
        }
        node
    }

    /// Raw aggregated scores (before base values and post transform), `targets` per row.
    /// Trees are the outer loop so each stays in cache across the rows of a batch.
    fn scores(&self, data: &[f32], width: usize, rows: usize) -> Vec<f64> {
        let targets = self.targets;
        let mut scores = vec![0.0; rows * targets];
        let extremes = matches!(self.aggregate, Aggregate::Min | Aggregate::Max);
        let mut seen = vec![false; if extremes { rows * targets } else { 0 }];
        for &root in &self.roots {
            for (r, row) in data.chunks_exact(width).take(rows).enumerate() {
                let leaf = if self.only_leq {
                    self.leaf_leq(root, row)
                } else {
                    self.leaf(root, row)
                };
                let out = &mut scores[r * targets..(r + 1) * targets];
                let leaf_weights =
                    &self.weights[leaf.true_child as usize..leaf.false_child as usize];
                if !extremes {
                    for &(t, w) in leaf_weights {
                        out[t as usize] += w;
                    }
                    continue;
                }
                let seen = &mut seen[r * targets..(r + 1) * targets];
                for &(t, w) in leaf_weights {
                    let t = t as usize;
                    out[t] = match self.aggregate {
                        Aggregate::Min if seen[t] => out[t].min(w),
                        Aggregate::Max if seen[t] => out[t].max(w),
                        _ => w,
                    };
                    seen[t] = true;
                }
            }
        }
        if self.aggregate == Aggregate::Average {
            let trees = self.roots.len() as f64;
            scores.iter_mut().for_each(|s| *s /= trees);
        }
        scores
    }

    fn rows<'a>(&self, input: &'a Tensor) -> TractResult<(usize, usize, &'a [f32])> {
        let shape = input.shape();
        if shape.len() != 2 {
            bail!("tree ensembles take a [rows, features] input");
        }
        if shape[1] < self.width {
            bail!(
                "the trees read {} features, the input has {}",
                self.width,
                shape[1]
            );
        }
        Ok((
            shape[0],
            shape[1],
            input.try_as_plain_ram()?.as_slice::<f32>()?,
        ))
    }
}

/// The typed op: a classifier (labels and probabilities) or a regressor (values).
#[derive(Debug, Clone)]
struct TreeOp {
    ensemble: Arc<Ensemble>,
    labels: Option<Labels>,
}

impl PartialEq for TreeOp {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.ensemble, &other.ensemble) && self.labels == other.labels
    }
}

impl Eq for TreeOp {}

impl TreeOp {
    /// One class alone out of two in the leaves means ONNX's binary layout: a single score
    /// for that class.
    fn single_score(&self) -> Option<usize> {
        let labels = self.labels.as_ref()?;
        (labels.len() == 2)
            .then_some(self.ensemble.single_class)
            .flatten()
            .map(|c| c as usize)
    }

    fn regress(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        let e = &self.ensemble;
        let (rows, width, data) = e.rows(input)?;
        let mut out = Vec::with_capacity(rows * e.targets);
        let mut all = e.scores(data, width.max(1), rows);
        for scores in all.chunks_exact_mut(e.targets) {
            for (t, s) in scores.iter_mut().enumerate() {
                *s += e.base_values.get(t).copied().unwrap_or(0.0);
            }
            e.post_transform.apply(scores);
            out.extend(scores.iter().map(|&s| s as f32));
        }
        Ok(tvec!(
            tensor1(&out).into_shape(&[rows, e.targets])?.into_tvalue()
        ))
    }

    fn classify(&self, input: &Tensor, labels: &Labels) -> TractResult<TVec<TValue>> {
        let e = &self.ensemble;
        let (rows, width, data) = e.rows(input)?;
        let classes = labels.len();
        let mut winners = Vec::with_capacity(rows);
        let mut probabilities = Vec::with_capacity(rows * classes);
        let single = self.single_score();
        let all_positive = e.all_positive;
        let mut all = e.scores(data, width.max(1), rows);
        for scores in all.chunks_exact_mut(e.targets) {
            if let Some(class) = single {
                // ONNX's binary layout: one score s for the positive class.
                let s = scores[class]
                    + e.base_values
                        .get(if e.base_values.len() == 2 { class } else { 0 })
                        .copied()
                        .unwrap_or(0.0);
                let positive = if all_positive { s > 0.5 } else { s > 0.0 };
                winners.push(usize::from(positive));
                let pair = match e.post_transform {
                    PostTransform::Logistic => [logistic(-s), logistic(s)],
                    PostTransform::None if all_positive => [1.0 - s, s],
                    PostTransform::Probit => [probit(-s), probit(s)],
                    other => {
                        let mut pair = [-s, s];
                        other.apply(&mut pair);
                        pair
                    }
                };
                probabilities.extend(pair.iter().map(|&p| p as f32));
            } else {
                for (t, s) in scores.iter_mut().enumerate() {
                    *s += e.base_values.get(t).copied().unwrap_or(0.0);
                }
                winners.push(Labels::argmax(scores));
                e.post_transform.apply(scores);
                probabilities.extend(scores.iter().map(|&s| s as f32));
            }
        }
        let labels = labels.pick(&winners);
        let columns = probabilities.len() / rows.max(1);
        let probabilities = tensor1(&probabilities).into_shape(&[rows, columns])?;
        Ok(tvec!(labels.into_tvalue(), probabilities.into_tvalue()))
    }

    fn probability_columns(&self) -> usize {
        match (&self.labels, self.single_score()) {
            (Some(_), Some(_)) => 2,
            (Some(labels), None) => labels.len(),
            (None, _) => self.ensemble.targets,
        }
    }
}

impl OnePass for TreeOp {
    fn op_name(&self) -> StaticName {
        if self.labels.is_some() {
            "FlatTreeEnsembleClassifier".into()
        } else {
            "FlatTreeEnsembleRegressor".into()
        }
    }

    fn facts(&self, input: &TypedFact) -> TractResult<TVec<TypedFact>> {
        let rows = input.shape[0].clone();
        let scores = f32::fact(&[rows.clone(), self.probability_columns().to_dim()]);
        Ok(match &self.labels {
            Some(labels) => tvec!(TypedFact::dt_shape(labels.datum_type(), &[rows]), scores),
            None => tvec!(scores),
        })
    }

    fn compute(&self, input: &Tensor) -> TractResult<TVec<TValue>> {
        match &self.labels {
            Some(labels) => self.classify(input, labels),
            None => self.regress(input),
        }
    }
}

/// The inference-time form, which types the outputs and wires [`TreeOp`].
#[derive(Debug, Clone)]
struct TreeEnsemble(TreeOp);

impl Expansion for TreeEnsemble {
    fn name(&self) -> StaticName {
        self.0.op_name()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(if self.0.labels.is_some() { 2 } else { 1 })
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        output_rules(
            s,
            inputs,
            outputs,
            self.0.labels.as_ref(),
            self.0.probability_columns(),
        )
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, OnePassOp(self.0.clone()), inputs)
    }
}

pub(crate) fn classifier(_ctx: &ParsingContext<'_>, node: &NodeProto) -> Built {
    let labels = Labels::parse(node, "classlabels_int64s", "classlabels_strings")?;
    let ensemble = Ensemble::parse(node, "class", labels.len())?;
    if ensemble.aggregate != Aggregate::Sum {
        bail!("TreeEnsembleClassifier sums its trees");
    }
    Ok((
        expand(TreeEnsemble(TreeOp {
            ensemble: Arc::new(ensemble),
            labels: Some(labels),
        })),
        vec![],
    ))
}

pub(crate) fn regressor(_ctx: &ParsingContext<'_>, node: &NodeProto) -> Built {
    let targets = attributes::int(node, "n_targets").unwrap_or(1);
    let targets = usize::try_from(targets)
        .ok()
        .filter(|&t| t > 0)
        .ok_or_else(|| format_err!("TreeEnsembleRegressor: n_targets must be positive"))?;
    let ensemble = Ensemble::parse(node, "target", targets)?;
    Ok((
        expand(TreeEnsemble(TreeOp {
            ensemble: Arc::new(ensemble),
            labels: None,
        })),
        vec![],
    ))
}

//! Summary of tract's optimised plan for a model: the matrix kernels it chose
//! and the ops left after optimisation. Logged once at load, and read by the
//! tests that check that int8 convolutions run on integer kernels and f16 ones
//! on half-precision kernels.

use std::collections::BTreeMap;
use std::sync::Arc;

use tract_core::ops::matmul::optimized::OptMatMul;
use tract_core::prelude::*;

use super::winograd::WinogradConv;

/// One matrix product of the optimised plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MatMulNode {
    pub node: String,
    /// Kernel names, as tract names them: architecture, operation, accumulator type, tile
    /// (`avx512vnni_mmm_i32_16x16`, `arm64fp16_mmm_f16_16x8_a55`).
    pub kernels: Vec<String>,
}

/// One node whose output is a float tensor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloatNode {
    pub node: String,
    pub op: String,
}

/// Parts of an optimised plan that show how it computes.
#[derive(Clone, Debug, Default)]
pub struct PlanSummary {
    pub matmuls: Vec<MatMulNode>,
    /// How many nodes of each op, by tract's op name.
    pub ops: BTreeMap<String, usize>,
    /// Nodes computing in float, apart from constants and the input.
    pub float_nodes: Vec<FloatNode>,
    /// Activations that run inside another op rather than as nodes of their
    /// own, by name (`Mish`, `LeakyRelu`): those of Winograd convolutions.
    pub fused_activations: BTreeMap<String, usize>,
}

impl PlanSummary {
    pub fn of(model: &TypedModel) -> PlanSummary {
        let mut summary = PlanSummary::default();
        for node in model.nodes() {
            let op = node.op.name().to_string();
            if let Some(matmul) = node.op_as::<OptMatMul>() {
                summary.matmuls.push(MatMulNode {
                    node: node.name.clone(),
                    kernels: matmul.mmm.iter().map(|k| k.name().to_string()).collect(),
                });
            } else if let Some(winograd) = node.op_as::<WinogradConv>() {
                summary
                    .matmuls
                    .push(MatMulNode { node: node.name.clone(), kernels: vec![winograd.kernel_name().into()] });
                if let Some(activation) = winograd.activation.name() {
                    *summary.fused_activations.entry(activation.into()).or_default() += 1;
                }
            }
            let is_float = node.outputs.iter().any(|o| o.fact.datum_type.is_float());
            if is_float && op != "Const" && op != "Source" {
                summary.float_nodes.push(FloatNode { node: node.name.clone(), op: op.clone() });
            }
            *summary.ops.entry(op).or_default() += 1;
        }
        summary
    }

    /// Lists each kernel with the number of matrix products using it, most used first:
    /// `avx512vnni_mmm_i32_16x16 ×19, avx512vnni_mmm_i32_8x8 ×2`.
    pub fn kernel_counts(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for matmul in &self.matmuls {
            for kernel in &matmul.kernels {
                *counts.entry(kernel).or_default() += 1;
            }
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        counts.iter().map(|(kernel, count)| format!("{kernel} ×{count}")).collect::<Vec<_>>().join(", ")
    }
}

/// Time spent in one node of the plan during a profiled inference.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeTime {
    pub node: String,
    pub op: String,
    pub millis: f64,
}

/// Runs `plan` once on `input`, timing every node, and returns the nodes
/// that took time, slowest first: what `edgedet bench --profile` prints, to
/// show where an inference goes without installing tract's own command.
///
/// # Errors
/// tract fails to run the plan.
pub fn profile(plan: &Arc<TypedRunnableModel>, input: Tensor) -> TractResult<Vec<NodeTime>> {
    let mut state = plan.spawn()?;
    let mut times: Vec<NodeTime> = Vec::new();
    state.run_plan_with_eval(tvec!(input.into()), |session, op_state, node, inputs| {
        let started = std::time::Instant::now();
        let outputs = tract_core::plan::eval(session, op_state, node, inputs);
        times.push(NodeTime {
            node: node.name.clone(),
            op: node.op.name().to_string(),
            millis: started.elapsed().as_secs_f64() * 1000.0,
        });
        outputs
    })?;
    times.retain(|t| t.millis > 0.0);
    times.sort_by(|a, b| b.millis.total_cmp(&a.millis));
    Ok(times)
}

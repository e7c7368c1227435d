// The ONE list of anomaly kinds. The name is what `.anomaly_type` holds and what operators'
// scripts `case` on, so existing names (heartbeat_stall, throughput_flatline, gate_collapse,
// zero_grad) must never change. Alert rules, docs and the status page are derived from this list.

/** One anomaly kind and how trainwatch treats it. */
export interface AnomalyKind {
  name: string;
  /** Alert name in alerts/ (CamelCase, Training prefix). */
  alert: string;
  /** May this anomaly write .HALT (when halting is enabled)? */
  halts: boolean;
  severity: 'critical' | 'warning' | 'info';
  summary: string;
  /** Silence is expected once .HALT exists (the trainer was asked to stop): not detected then. */
  quietWhileHalted?: boolean;
  /**
   * Which kind names the run when several are active (1 first): halting critical kinds, then
   * halting warnings, then the rest. `.anomaly_type`, `.anomaly.json` and `.HALT` all name it.
   */
  priority: number;
}

export const ANOMALY_KINDS = [
  {
    name: 'heartbeat_stall',
    alert: 'TrainingHeartbeatStalled',
    halts: true,
    severity: 'critical',
    summary: 'A training rank stopped sending heartbeats.',
    quietWhileHalted: true,
    priority: 2,
  },
  {
    name: 'throughput_flatline',
    alert: 'TrainingThroughputFlatline',
    halts: true,
    severity: 'critical',
    summary: 'A training rank reports zero throughput.',
    priority: 5,
  },
  {
    name: 'loss_flatline',
    alert: 'TrainingLossFlatline',
    halts: true,
    severity: 'warning',
    summary: 'Training loss has not changed for many logging steps.',
    priority: 6,
  },
  {
    name: 'zero_grad',
    alert: 'TrainingZeroGradient',
    halts: true,
    severity: 'critical',
    summary: 'Gradient norm is zero: the model stopped learning.',
    priority: 3,
  },
  {
    name: 'fetch_stall',
    alert: 'TrainingDataFetchStall',
    halts: false,
    severity: 'warning',
    summary: 'Data fetch time spiked far above its baseline.',
    priority: 8,
  },
  { name: 'gate_collapse', alert: 'TrainingGateCollapse', halts: true, severity: 'critical', summary: 'NSA gate distribution collapsed.', priority: 4 },
  {
    name: 'nonfinite_loss',
    alert: 'TrainingLossNotFinite',
    halts: true,
    severity: 'critical',
    summary: 'Loss or gradient norm is NaN or infinite: the run diverged.',
    priority: 1,
  },
  { name: 'straggler', alert: 'TrainingRankStraggler', halts: false, severity: 'warning', summary: 'A rank is far behind its peers.', priority: 9 },
  {
    name: 'trainer_crash',
    alert: 'TrainingProcessCrashed',
    halts: false,
    severity: 'critical',
    summary: 'The trainer process is gone but nobody asked it to stop.',
    quietWhileHalted: true,
    priority: 7,
  },
] as const satisfies readonly AnomalyKind[];

export type AnomalyName = (typeof ANOMALY_KINDS)[number]['name'];

/** Kind names by priority, most important first. */
export const BY_PRIORITY: readonly AnomalyName[] = [...ANOMALY_KINDS].sort((a, b) => a.priority - b.priority).map((k) => k.name);

/** Looks a kind up by its name. */
export function kindOf(name: string): AnomalyKind | undefined {
  return (ANOMALY_KINDS as readonly AnomalyKind[]).find((k) => k.name === name);
}

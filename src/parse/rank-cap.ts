// The cap on distinct ranks per run (run.max-ranks): a heartbeat file whose records carry many
// rank values would otherwise grow one run's state, its series and its detection cost without
// bound. Pure: the caller counts what is refused (parse error reason too_many_ranks).

/** Whether a record of `rank` may enter a run that tracks `known` ranks: a rank already tracked always may, a new one only while fewer than `max` are. */
export function admitRank(known: { has(rank: number): boolean; readonly size: number }, rank: number, max: number): boolean {
  return known.has(rank) || known.size < max;
}

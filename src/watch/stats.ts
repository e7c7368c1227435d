// Self-metric counters, plain numbers: rendered at scrape time, never updated from timers.
import { AUDIT_ERROR_REASONS, type AuditErrorReason } from '../actions/audit.js';
import { PARSE_ERROR_REASONS, type ParseErrorReason } from '../parse/line.js';

/** Counters that describe trainwatch itself. */
export class Stats {
  parseErrors: Record<ParseErrorReason, number> = Object.fromEntries(PARSE_ERROR_REASONS.map((r) => [r, 0])) as Record<ParseErrorReason, number>;
  bytesRead = 0;
  linesRead = 0;
  runsExpired = 0;
  pollingFallback = false;
  /** `action|result` → count */
  actions = new Map<string, number>();
  /** HTTP status code → count */
  webhookRequests = new Map<string, number>();
  /** result → count */
  webhookAlerts = new Map<string, number>();
  /** audit-log reads, appends and rotations that failed, by reason */
  auditErrors: Record<AuditErrorReason, number> = Object.fromEntries(AUDIT_ERROR_REASONS.map((r) => [r, 0])) as Record<AuditErrorReason, number>;
  auditRotations = 0;

  /** `channel|result` → count: notification commands and webhook deliveries */
  notifications = new Map<string, number>();

  /** Counts one notification outcome (exec or webhook: ok, failed, timeout, retry, dropped). */
  notification(channel: string, result: string): void {
    const k = `${channel}|${result}`;
    this.notifications.set(k, (this.notifications.get(k) ?? 0) + 1);
  }

  /** Counts one action outcome. */
  action(action: string, result: string): void {
    const k = `${action}|${result}`;
    this.actions.set(k, (this.actions.get(k) ?? 0) + 1);
  }

  /** Counts one audit-log failure. */
  auditError(reason: AuditErrorReason): void {
    this.auditErrors[reason]++;
  }

  /** Counts one webhook request by its status code. */
  webhookRequest(code: number): void {
    this.webhookRequests.set(String(code), (this.webhookRequests.get(String(code)) ?? 0) + 1);
  }

  /** Counts one alert of a webhook payload by what was done with it. */
  webhookAlert(result: string): void {
    this.webhookAlerts.set(result, (this.webhookAlerts.get(result) ?? 0) + 1);
  }
}

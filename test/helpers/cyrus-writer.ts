// The Cyrus-2.3-like test writer lives in examples/cyrus-writer.ts (a process
// of its own) with its driver and journal in examples/cyrus-writer/, so that
// bench/live-traffic.ts can use it too (bench/ cannot import test/). Tests
// import it from here.

export {
  type OnceOptions,
  onceArgv,
  replayArgv,
  runWriter,
  startTraffic,
  type Traffic,
  type TrafficOptions,
  WRITER_JS,
} from "../../examples/cyrus-writer/driver.js";
export {
  type JournalEntry,
  type OpEntry,
  opsOf,
  readJournal,
  totalWaitMs,
  type WaitStats,
  waitStats,
} from "../../examples/cyrus-writer/journal.js";

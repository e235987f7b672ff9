import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export interface ConaryVerdict {
  granted: boolean;
  server?: string;
  class?: string;
  key?: string;
  timeout?: number | null;
  retry?: boolean;
  error?: string;
}

const SCRIPT = fileURLToPath(new URL('./conary_judge.py', import.meta.url));

/**
 * Judges rUS answers the way a Conary repository reads them: real expat, through python3,
 * with Conary's parser rules (see conary_judge.py). One python process serves many documents.
 */
export class ConaryJudge {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly waiting: ((verdict: ConaryVerdict) => void)[] = [];
  private failure: Error | undefined;

  constructor() {
    this.child = spawn('python3', [SCRIPT], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    this.child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    this.child.on('error', (err) => {
      this.failure = new Error(`the Conary judge needs python3 (with expat): ${err.message}`);
    });
    this.child.on('exit', (code) => {
      this.failure ??= new Error(`the Conary judge exited (${code}): ${stderr}`);
    });
    createInterface({ input: this.child.stdout }).on('line', (line) => {
      this.waiting.shift()?.(JSON.parse(line) as ConaryVerdict);
    });
  }

  judge(document: string, requestedServer: string): Promise<ConaryVerdict> {
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      this.waiting.push(resolve);
      this.child.stdin.write(`${JSON.stringify({ doc: document, server: requestedServer })}\n`, (err) => {
        if (err) reject(this.failure ?? err);
      });
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((r) => this.child.once('exit', r));
    this.child.stdin.end();
    await exited;
  }
}

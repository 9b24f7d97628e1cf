/**
 * The one typed argument builder for every ffmpeg command OnAir runs (fluent-ffmpeg is archived; we spawn ffmpeg
 * ourselves). Options keep their order, may repeat (`-map`), and values are never shell-interpreted: the result is
 * an argv array for `child_process.spawn`.
 */
export type OptionValue = string | number;
export type Option = readonly [flag: `-${string}`, value?: OptionValue];

export interface FfmpegInput {
  options?: readonly Option[];
  url: string;
}

export interface FfmpegOutput {
  options: readonly Option[];
  url: string;
}

export interface FfmpegCommandSpec {
  global?: readonly Option[];
  inputs: readonly FfmpegInput[];
  filterComplex?: string;
  outputs: readonly FfmpegOutput[];
}

function flatten(options: readonly Option[]): string[] {
  const argv: string[] = [];
  for (const [flag, value] of options) {
    argv.push(flag);
    if (value !== undefined) argv.push(String(value));
  }
  return argv;
}

export function buildFfmpegArgs(spec: FfmpegCommandSpec): string[] {
  const argv = flatten(spec.global ?? []);
  for (const input of spec.inputs) argv.push(...flatten(input.options ?? []), '-i', input.url);
  if (spec.filterComplex !== undefined) argv.push('-filter_complex', spec.filterComplex);
  for (const output of spec.outputs) argv.push(...flatten(output.options), output.url);
  return argv;
}

/** Quotes an argv for a log line or a copy-paste into a shell (debug only; spawn never goes through a shell). */
export function formatCommandLine(command: string, argv: readonly string[]): string {
  const quote = (arg: string): string => (/^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`);
  return [command, ...argv].map(quote).join(' ');
}

/**
 * What this machine offers Dawn, onnxruntime's WebGPU implementation, on Linux: it reaches a
 * GPU through Vulkan, so it needs the Vulkan loader (`libvulkan.so.1`, Debian's `libvulkan1`)
 * and a driver's ICD file (JSON naming the driver library). The loader reads ICD files from
 * `VK_DRIVER_FILES` (or the older `VK_ICD_FILENAMES`) when set, else from its default folders.
 * Containers given an NVIDIA GPU often carry the driver's ICD outside those folders (under
 * /usr/local/nvidia), where the loader never looks. Used to say why WebGPU found no adapter,
 * and by the GPU check to look for an ICD before it gives up.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { delimiter, join } from 'node:path';

/** Folders the Vulkan loader searches for ICD files when no variable names them (Linux). */
export const DEFAULT_ICD_DIRS = [
  '/usr/local/etc/vulkan/icd.d',
  '/usr/local/share/vulkan/icd.d',
  '/etc/vulkan/icd.d',
  '/usr/share/vulkan/icd.d',
];

/** Places an NVIDIA driver's ICD file is found outside those folders (the NVIDIA container runtime mounts the driver under /usr/local/nvidia). */
export const EXTRA_ICD_CANDIDATES = [
  '/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json',
  '/usr/local/nvidia/etc/vulkan/icd.d/nvidia_icd.json',
  '/usr/share/vulkan/icd.d/nvidia_icd.json',
  '/etc/vulkan/icd.d/nvidia_icd.json',
];

const LIBRARY_DIRS = ['/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib', '/usr/local/lib'];

export interface VulkanSetup {
  /** Where `libvulkan.so.1` was found (a folder, or `ld.so.cache`); undefined when nowhere. */
  loader?: string;
  /** The variable naming ICD files, when one is set. */
  icdVariable?: { name: 'VK_DRIVER_FILES' | 'VK_ICD_FILENAMES'; value: string };
  /** ICD files the loader would read. */
  icds: string[];
  /** NVIDIA ICD files that exist outside what the loader reads: a VK_DRIVER_FILES away from working. */
  unreadNvidiaIcds: string[];
}

function jsonFiles(path: string): string[] {
  try {
    if (statSync(path).isDirectory())
      return readdirSync(path)
        .filter((f) => f.endsWith('.json'))
        .sort()
        .map((f) => join(path, f));
    return [path];
  } catch {
    return [];
  }
}

/** What the Vulkan loader would find here, read from the filesystem and `env` (nothing is loaded). */
export function vulkanSetup(env: NodeJS.ProcessEnv = process.env): VulkanSetup {
  let loader: string | undefined;
  const dirs = [...(env.LD_LIBRARY_PATH ?? '').split(delimiter).filter(Boolean), ...LIBRARY_DIRS];
  loader = dirs.find((d) => existsSync(join(d, 'libvulkan.so.1')));
  if (!loader) {
    try {
      if (readFileSync('/etc/ld.so.cache').includes('libvulkan.so.1')) loader = 'ld.so.cache';
    } catch {
      // no cache: the folders above are all there is
    }
  }
  const name: 'VK_DRIVER_FILES' | 'VK_ICD_FILENAMES' | undefined = env.VK_DRIVER_FILES
    ? 'VK_DRIVER_FILES'
    : env.VK_ICD_FILENAMES
      ? 'VK_ICD_FILENAMES'
      : undefined;
  const icdVariable = name ? { name, value: env[name]! } : undefined;
  const icds = icdVariable
    ? icdVariable.value
        .split(delimiter)
        .filter(Boolean)
        .flatMap(jsonFiles)
        .filter((f) => existsSync(f))
    : DEFAULT_ICD_DIRS.flatMap(jsonFiles);
  const unreadNvidiaIcds = EXTRA_ICD_CANDIDATES.filter((f) => existsSync(f) && !icds.includes(f));
  return { loader, icdVariable, icds, unreadNvidiaIcds };
}

/** One sentence on why Dawn may have found no adapter, from what `vulkanSetup` saw. */
export function explainNoAdapter(setup: VulkanSetup = vulkanSetup()): string {
  if (process.platform !== 'linux') return 'no GPU adapter was found';
  if (!setup.loader)
    return 'the Vulkan loader libvulkan.so.1 is not installed (Debian/Ubuntu package libvulkan1), so Dawn cannot reach a GPU';
  if (setup.icds.length === 0) {
    const where = setup.icdVariable
      ? `${setup.icdVariable.name}=${setup.icdVariable.value} names no ICD file`
      : `no ICD file in ${DEFAULT_ICD_DIRS.join(', ')}`;
    const hint = setup.unreadNvidiaIcds.length
      ? `; an NVIDIA ICD exists at ${setup.unreadNvidiaIcds[0]}: set VK_DRIVER_FILES to it`
      : '; no GPU driver is installed for Vulkan';
    return `the Vulkan loader found no GPU driver (${where}${hint})`;
  }
  return `Vulkan offered no device Dawn accepts (driver files ${setup.icds.join(', ')}): no GPU, or one without what WebGPU needs`;
}

/** Stand-in for `k6/execution`: who this VU is, and test.abort(). */
import { TestAborted, vu } from '../runtime.ts';

export default {
  vu: {
    get idInTest() {
      return vu.id;
    },
    get idInInstance() {
      return vu.id;
    },
    get iterationInScenario() {
      return vu.iteration;
    },
    get iterationInInstance() {
      return vu.iteration;
    },
  },
  scenario: {
    get name() {
      return vu.scenario;
    },
    get iterationInTest() {
      return vu.iteration;
    },
  },
  test: {
    abort(reason = 'test aborted'): never {
      throw new TestAborted(reason);
    },
  },
};

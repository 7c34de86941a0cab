// Package attack_test holds the adversarial tests of the whole service:
// races, kills, bad input, Redis trouble and leaks, run against real
// redis-server processes. Most began as a failing test for a bug found by
// attacking the service; they stay as regression tests.
package attack_test

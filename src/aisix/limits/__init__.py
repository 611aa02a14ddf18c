"""Rate limits, concurrency slots and spend budgets (contract §9, §10).

`governor.Governor` is what the request pipeline calls (`admit_gate`, `admit_attempt`, and
the `Hold` finishers); `layers` says which buckets apply; `base` is the counter-backend
protocol with `memory` (one process) and `redis` (shared, Lua in `lua`) implementations;
`windows` is the UTC window and period arithmetic; `factory.build_governor` wires it from
settings.
"""

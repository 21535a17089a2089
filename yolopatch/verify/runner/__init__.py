"""The verify runner: the code `yolopatch verify` runs INSIDE the target's interpreter.

It imports the standard library, torch and the target, never the rest of yolopatch (the target's
interpreter may not have yolopatch or its dependencies installed): its modules import each other and
`..protocol` only. It is started as a script, `python <this folder>/__main__.py SPEC.json`, which mounts
this folder and protocol.py under a private package name without putting any folder on sys.path, so
nothing here can shadow a module of the target.

  main         the modes: verify (the ladder), stock (fingerprints on the pristine copy), reload
  env          process set-up before torch or the target is imported: no network, scratch folders
  imports      step 1, which copy of the target `import` loads
  adapters     what differs between target families: model classes, loss, save, finish, load, export
  tasks        what differs between tasks: a head's task, its outputs, its synthetic training targets
  rows         static checks of a YAML's rows (standard library only)
  rowtrace     the YAML row a build or a first forward failed at, with what it received
  ladder       steps 2-9 for every model
  blame        environment or patch: the stock model of the task through the same steps
  causes       known environment faults and their fixes (standard library only)
  layers       new modules, parse_model's view of the rows, input sizes
  shapes · fingerprints · figures · train · checkpoint · fresh   one step (or half of one) each
  messages     one-line descriptions of exceptions
"""

# eoslab pipeline: placeholder until the figure rules land (issue #4).
rule all:
    run:
        print("no figures defined yet")

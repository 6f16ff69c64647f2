// placeholder until fs sources land
